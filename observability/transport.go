package observability

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Kinds of Pathling requests (metric label kind, span attribute
// pathling_sync.request.kind).
const (
	KindKickOff   = "kickoff"   // POST .../$import-pnp
	KindPoll      = "poll"      // GET .../$job
	KindDelete    = "delete"    // DELETE .../$job
	KindDiscovery = "discovery" // GET .../.well-known/... (SMART configuration)
	KindToken     = "token"     // any other POST: the OAuth2 token endpoint
	KindOther     = "other"
)

// attrRequestKind is the span attribute of a request's kind.
const attrRequestKind = attribute.Key("pathling_sync.request.kind")

// TransportConfig configures NewTransport.
type TransportConfig struct {
	// Target labels the requests' metrics.
	Target string
	// SpanAttributes are added to every request's span (cmd gives the
	// target's, under the handler's attribute key, so that the HTTP spans
	// carry the same key as the run's).
	SpanAttributes []attribute.KeyValue
	// TracerProvider makes the HTTP client spans (nil: none, but the
	// caller's trace context is still sent in traceparent).
	TracerProvider trace.TracerProvider
	// Metrics counts the requests (nil: not counted).
	Metrics *Metrics
	// ResendCount tells how many times the request of a context was sent
	// before (clients/pathling.ResendCount); a positive count becomes the
	// span's http.request.resend_count.
	ResendCount func(context.Context) int
}

// NewTransport wraps base (http.DefaultTransport when nil) for the Pathling
// client and its token source: each request gets an HTTP client span per the
// OpenTelemetry HTTP semantic conventions (otelhttp: http.request.method,
// url.full, server.address, server.port, http.response.status_code,
// error.type), named "<method> <path>", a child of the span in the request's
// context, whose context is sent on in traceparent; and it is counted in
// pathling_sync_pathling_requests_total and timed in
// pathling_sync_pathling_request_duration_seconds. Headers (Authorization)
// are never recorded.
func NewTransport(base http.RoundTripper, c TransportConfig) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	tp := c.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	m := measuredTransport{base: base, target: c.Target, spanAttributes: c.SpanAttributes,
		metrics: c.Metrics, resendCount: c.ResendCount}
	switch tp.(type) {
	case idTracerProvider, noop.TracerProvider:
		// Spans that are never recorded need none of otelhttp's attribute
		// and metric work (a third of a request's client-side cost): only
		// their ids, sent on in traceparent. One allocation per target.
		return &unrecordedTransport{measuredTransport: m, tracer: tp.Tracer(transportTracerName)}
	}
	inner := &m
	return otelhttp.NewTransport(inner,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // ours are the metrics
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path
		}),
	)
}

// measuredTransport runs inside otelhttp's span: it adds this service's
// attributes to the span and records the metrics. It holds only what it
// reads of TransportConfig (there is one per target).
type measuredTransport struct {
	base           http.RoundTripper
	target         string
	spanAttributes []attribute.KeyValue
	metrics        *Metrics
	resendCount    func(context.Context) int
}

func (t *measuredTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	kind := RequestKind(r)
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetAttributes(
			semconv.URLTemplate(r.URL.Path), // our paths carry no ids (the job id is in the query)
			attrRequestKind.String(kind),
		)
		span.SetAttributes(t.spanAttributes...)
		if t.resendCount != nil {
			if n := t.resendCount(r.Context()); n > 0 {
				span.SetAttributes(semconv.HTTPRequestResendCount(n))
			}
		}
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	if t.metrics != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		t.metrics.PathlingRequest(r.Context(), t.target, kind, status, time.Since(start))
	}
	return resp, err
}

// transportTracerName is the instrumentation scope of the client spans
// made without otelhttp (otelhttp names its own).
const transportTracerName = "github.com/pathling-sync/pathling-sync/observability"

// unrecordedTransport starts each request's client span (not recorded: ids
// only) and sends its context on in traceparent, as otelhttp would, then
// measures the request as measuredTransport (held by value: one allocation).
type unrecordedTransport struct {
	measuredTransport
	tracer trace.Tracer
}

func (t *unrecordedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, span := t.tracer.Start(r.Context(), r.Method, trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	r = r.Clone(ctx) // a RoundTripper must not change its caller's request
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(r.Header))
	return t.measuredTransport.RoundTrip(r)
}

// RequestKind classifies a request of the Pathling client or its token
// source (see the Kind* constants).
func RequestKind(r *http.Request) string {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodDelete:
		return KindDelete
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/$import-pnp"):
		return KindKickOff
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/$job"):
		return KindPoll
	case r.Method == http.MethodGet && strings.Contains(p, "/.well-known/"):
		return KindDiscovery
	case r.Method == http.MethodPost:
		return KindToken
	}
	return KindOther
}
