package observability

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestTraceContextRoundTripKeepsLowercaseKeys(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	defer span.End()
	ts, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext().WithTraceState(ts)
	ctx = trace.ContextWithSpanContext(ctx, sc)

	h := nats.Header{}
	prop := propagation.TraceContext{}
	Inject(ctx, prop, h)

	if got := h["traceparent"]; len(got) != 1 || got[0] == "" {
		t.Fatalf("traceparent = %q, headers %v", got, h)
	}
	if got := h.Get("tracestate"); got != "vendor=value" {
		t.Fatalf("tracestate = %q", got)
	}
	for _, canonical := range []string{"Traceparent", "Tracestate"} {
		if _, ok := h[canonical]; ok {
			t.Fatalf("header %q was canonicalised: %v", canonical, h)
		}
	}

	got := trace.SpanContextFromContext(Extract(context.Background(), prop, h))
	if !got.IsRemote() || got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() ||
		got.TraceFlags() != sc.TraceFlags() || got.TraceState().String() != "vendor=value" {
		t.Fatalf("extracted %+v, want %+v", got, sc)
	}
}

func TestExtractReadsCanonicalisedHeader(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	h := map[string][]string{"Traceparent": {tp}}
	sc := trace.SpanContextFromContext(Extract(context.Background(), propagation.TraceContext{}, h))
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("extracted %+v", sc)
	}
}

func TestHeaderCarrier(t *testing.T) {
	c := HeaderCarrier{}
	c.Set("traceparent", "a")
	c.Set("TRACEPARENT", "b")
	if got := c.Get("traceparent"); got != "a" {
		t.Fatalf("exact match: got %q", got)
	}
	c2 := HeaderCarrier{"Traceparent": {"x"}, "TRACEPARENT": {"y"}, "empty": {}}
	if got := c2.Get("traceparent"); got != "y" { // "TRACEPARENT" < "Traceparent"
		t.Fatalf("case-insensitive match: got %q", got)
	}
	if got := c2.Get("empty"); got != "" {
		t.Fatalf("empty values: got %q", got)
	}
	if got := len(c2.Keys()); got != 3 {
		t.Fatalf("keys: %d", got)
	}
	// nil header and nil propagator do nothing.
	Inject(context.Background(), propagation.TraceContext{}, nil)
	ctx := context.Background()
	if Extract(ctx, nil, c) != ctx {
		t.Fatal("nil propagator changed the context")
	}
}
