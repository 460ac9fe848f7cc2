package observability

import (
	"context"
	"net/http"
	"net/textproto"
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
		return &unrecordedTransport{measuredTransport: m, tracer: tp.Tracer(transportTracerName),
			startOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}}
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
	// startOpts are made once: a variadic argument of an interface method
	// escapes, so it would be allocated on every request.
	startOpts []trace.SpanStartOption
}

func (t *unrecordedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, span := t.tracer.Start(r.Context(), r.Method, t.startOpts...)
	defer span.End()
	// A RoundTripper must not change its caller's request. Only the header
	// gets something added, so a shallow copy with a header of its own is
	// enough: Request.Clone would also deep-copy the URL, trailer and forms,
	// which the base transport only reads.
	out := r.WithContext(ctx)
	out.Header = withTraceParentRoom(r.Header, trace.SpanContextFromContext(ctx).IsValid())
	propagation.TraceContext{}.Inject(ctx, traceHeader(out.Header))
	return t.measuredTransport.RoundTrip(out)
}

// Canonical names of the trace context headers (http.Header keys).
const (
	headerTraceParent = "Traceparent"
	headerTraceState  = "Tracestate"
)

// withTraceParentRoom copies h as http.Header.Clone does (all values in one
// backing array) and, when a traceparent will be injected (a valid span
// context), makes room for it: a slot in the map and a value in the backing
// array, so that setting it allocates neither.
func withTraceParentRoom(h http.Header, injects bool) http.Header {
	extra := 0
	if _, ok := h[headerTraceParent]; injects && !ok {
		extra = 1
	}
	nv := extra
	for _, vv := range h {
		nv += len(vv)
	}
	sv := make([]string, nv)
	h2 := make(http.Header, len(h)+extra)
	for k, vv := range h {
		if vv == nil {
			h2[k] = nil // as Clone: a nil value suppresses a default header
			continue
		}
		n := copy(sv, vv)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	if extra > 0 {
		h2[headerTraceParent] = sv[:1:1] // set by the propagator
	}
	return h2
}

// traceHeader is the carrier of a header made by withTraceParentRoom,
// whose value slices are its own: Set overwrites the first value in place
// (what http.Header.Set leaves, a single value, without allocating one),
// and knows the canonical form of the trace context keys.
type traceHeader http.Header

func (c traceHeader) Get(key string) string { return http.Header(c).Get(key) }

func (c traceHeader) Set(key, value string) {
	switch key {
	case "traceparent":
		key = headerTraceParent
	case "tracestate":
		key = headerTraceState
	default:
		key = textproto.CanonicalMIMEHeaderKey(key)
	}
	if vv := c[key]; len(vv) > 0 {
		vv[0] = value
		c[key] = vv[:1]
		return
	}
	c[key] = []string{value}
}

func (c traceHeader) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

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
