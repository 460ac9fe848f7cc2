package observability

import (
	"context"
	"encoding/binary"
	"math/rand/v2"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// idTracerProvider is the tracer provider when no span exporter is
// configured: its spans are not recorded (nothing would read them: an SDK
// span with no exporter still stores its attributes, events and status, and
// an in-flight run's consumer span lives for hours), but each gets a span
// context of its own, with a fresh span id, the parent's trace id or a new
// one, and the sampler's decision in its flags, as the SDK's would, so logs
// carry trace ids and published events a traceparent.
type idTracerProvider struct {
	embedded.TracerProvider
	// tracer is the one tracer of every name: made once, not at every
	// Tracer call (one per target's transport).
	tracer *idTracer
}

func newIDTracerProvider(sampler sdktrace.Sampler) idTracerProvider {
	return idTracerProvider{tracer: &idTracer{sampler: sampler}}
}

func (p idTracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return p.tracer
}

type idTracer struct {
	embedded.Tracer
	sampler sdktrace.Sampler
}

func (t *idTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	parent := trace.SpanContextFromContext(ctx)
	// The sampler reads the parent from its context: ctx itself, unless a
	// new root must hide ctx's span (a context made for the sampler costs
	// two allocations).
	pctx := ctx
	if cfg.NewRoot() && parent.IsValid() {
		parent = trace.SpanContext{}
		pctx = trace.ContextWithSpanContext(ctx, parent)
	}
	tid := parent.TraceID()
	if !parent.IsValid() {
		tid = newTraceID()
	}
	res := t.sampler.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: pctx, TraceID: tid, Name: name,
		Kind: cfg.SpanKind(), Attributes: cfg.Attributes(), Links: cfg.Links(),
	})
	var flags trace.TraceFlags
	if res.Decision == sdktrace.RecordAndSample {
		flags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: newSpanID(), TraceFlags: flags, TraceState: res.Tracestate,
	})
	// A context of sc holds sc's non-recording span (what the noop tracer
	// would hand back for it).
	sctx := trace.ContextWithSpanContext(ctx, sc)
	return sctx, trace.SpanFromContext(sctx)
}

func newTraceID() trace.TraceID {
	var id trace.TraceID
	for id == (trace.TraceID{}) {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for id == (trace.SpanID{}) {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}
