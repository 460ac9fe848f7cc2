package observability

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"reflect"

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

// newIDTracerProvider makes spans with sampler's decisions. parentOnly
// tells that sampler reads nothing of a span but its parent context and
// trace id, as every sampler of sampler() (the SDK's built-in ones) does.
func newIDTracerProvider(sampler sdktrace.Sampler, parentOnly bool) idTracerProvider {
	return idTracerProvider{tracer: &idTracer{sampler: sampler, parentOnly: parentOnly,
		attributesOption: reflect.TypeOf(trace.WithAttributes())}}
}

func (p idTracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return p.tracer
}

type idTracer struct {
	embedded.Tracer
	sampler    sdktrace.Sampler
	parentOnly bool
	// attributesOption is the type of trace.WithAttributes' options.
	attributesOption reflect.Type
}

func (t *idTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	params := sdktrace.SamplingParameters{Name: name}
	newRoot := false
	if t.parentOnly {
		// Of the options only WithNewRoot matters then: the attributes'
		// ones are skipped, as NewSpanStartConfig would copy all their
		// attributes (an allocation of their size) for nothing. An option
		// of another type, should WithAttributes' change, is applied: the
		// result is the same, only dearer.
		for _, o := range opts {
			if reflect.TypeOf(o) != t.attributesOption {
				if cfg := trace.NewSpanStartConfig(o); cfg.NewRoot() {
					newRoot = true
				}
			}
		}
	} else {
		cfg := trace.NewSpanStartConfig(opts...)
		newRoot = cfg.NewRoot()
		params.Kind, params.Attributes, params.Links = cfg.SpanKind(), cfg.Attributes(), cfg.Links()
	}
	parent := trace.SpanContextFromContext(ctx)
	// The sampler reads the parent from its context: ctx itself, unless a
	// new root must hide ctx's span (a context made for the sampler costs
	// two allocations).
	pctx := ctx
	if newRoot && parent.IsValid() {
		parent = trace.SpanContext{}
		pctx = trace.ContextWithSpanContext(ctx, parent)
	}
	tid := parent.TraceID()
	if !parent.IsValid() {
		tid = newTraceID()
	}
	params.ParentContext, params.TraceID = pctx, tid
	res := t.sampler.ShouldSample(params)
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
