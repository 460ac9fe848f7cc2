package handlers

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// The spans of a delivery and of its outcome: names, kinds and attributes
// in order, for a configured target (names made at New) and for a subject
// or target without them.
func TestSpanNamesAndAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	subjects := messages.Subjects{Prefix: messages.DefaultSubjectPrefix}
	o := &outcomes{subjects: subjects, source: "pathling-sync", prop: propagation.TraceContext{}, tracer: tp.Tracer(TracerName),
		names: map[string]*targetNames{"t1": newTargetNames(subjects, "t1")}}
	s := &Syncer{deps: deps{tracer: o.tracer, outcomes: o}, consumerGroup: "grp"}
	ctx := context.Background()

	ce := func(id, source, typ, subject string) []attribute.KeyValue {
		a := []attribute.KeyValue{semconv.CloudEventsEventSpecVersion("1.0")}
		for _, kv := range []attribute.KeyValue{semconv.CloudEventsEventID(id), semconv.CloudEventsEventSource(source),
			semconv.CloudEventsEventType(typ), semconv.CloudEventsEventSubject(subject)} {
			if kv.Value.AsString() != "" {
				a = append(a, kv)
			}
		}
		return a
	}
	consume := func(subject, target string, env *messages.Envelope) {
		h := natsHeader{}
		if env != nil {
			env.WriteTo(h)
		}
		d := Delivery{Subject: subject, Header: h, Data: []byte(`{}`), NumDelivered: 3}
		read, hasEnv := messages.ReadEnvelope(h) // as Handle reads it
		_, span := s.startConsume(ctx, d, read, hasEnv, intake{requestID: "r1", target: target})
		span.End()
	}
	consume("pathling.sync.requested.t1", "t1", &messages.Envelope{ID: "r1", Source: "test", Type: messages.TypeRequested, Subject: "t1", Time: time.Now()})
	consume("pathling.sync.requested.t9", "t9", nil) // a headless publish
	consume("pathling.sync.requested.t1", "t1", &messages.Envelope{ID: "r1"})
	for _, target := range []string{"t1", "t9"} {
		for _, typ := range []string{messages.TypeCompleted, messages.TypeFailed} {
			subject, id := subjects.Completed(target), messages.CompletedID("r1")
			if typ == messages.TypeFailed {
				subject, id = subjects.Failed(target), messages.FailedID("r1")
			}
			_, span := o.startPublish(ctx, subject, id, typ, target)
			span.End()
		}
	}
	_, span := o.startRepublish(ctx, Event{Subject: "pathling.sync.failed.t1", Envelope: messages.Envelope{ID: "r1/failed",
		Source: "pathling-sync", Type: messages.TypeFailed, Subject: "t1"}})
	span.End()

	consumeAttrs := func(subject string, tail ...attribute.KeyValue) []attribute.KeyValue {
		return append([]attribute.KeyValue{semconv.MessagingSystemKey.String("nats"), semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"), semconv.MessagingDestinationName(subject), semconv.MessagingMessageID("r1"),
			semconv.MessagingMessageBodySize(2), AttrRequestID.String("r1"), AttrDelivery.Int64(3),
			semconv.MessagingConsumerGroupName("grp")}, tail...)
	}
	publishAttrs := func(subject, id string, tail ...attribute.KeyValue) []attribute.KeyValue {
		return append([]attribute.KeyValue{semconv.MessagingSystemKey.String("nats"), semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"), semconv.MessagingDestinationName(subject), semconv.MessagingMessageID(id)}, tail...)
	}
	want := []struct {
		name  string
		kind  trace.SpanKind
		attrs []attribute.KeyValue
	}{
		{"process pathling.sync.requested.t1", trace.SpanKindConsumer, consumeAttrs("pathling.sync.requested.t1",
			append([]attribute.KeyValue{AttrTarget.String("t1")}, ce("r1", "test", messages.TypeRequested, "t1")...)...)},
		{"process pathling.sync.requested.t9", trace.SpanKindConsumer, consumeAttrs("pathling.sync.requested.t9", AttrTarget.String("t9"))},
		{"process pathling.sync.requested.t1", trace.SpanKindConsumer, consumeAttrs("pathling.sync.requested.t1",
			append([]attribute.KeyValue{AttrTarget.String("t1")}, ce("r1", "", "", "")...)...)},
	}
	for _, target := range []string{"t1", "t9"} {
		c, f := "pathling.sync.completed."+target, "pathling.sync.failed."+target
		want = append(want,
			struct {
				name  string
				kind  trace.SpanKind
				attrs []attribute.KeyValue
			}{"publish " + c, trace.SpanKindProducer, publishAttrs(c, "r1/completed", ce("r1/completed", "pathling-sync", messages.TypeCompleted, target)...)},
			struct {
				name  string
				kind  trace.SpanKind
				attrs []attribute.KeyValue
			}{"publish " + f, trace.SpanKindProducer, publishAttrs(f, "r1/failed", ce("r1/failed", "pathling-sync", messages.TypeFailed, target)...)})
	}
	want = append(want, struct {
		name  string
		kind  trace.SpanKind
		attrs []attribute.KeyValue
	}{"publish pathling.sync.failed.t1", trace.SpanKindProducer, publishAttrs("pathling.sync.failed.t1", "r1/failed",
		append(ce("r1/failed", "pathling-sync", messages.TypeFailed, "t1"), AttrRepublished.Bool(true))...)})

	got := rec.Ended()
	if len(got) != len(want) {
		t.Fatalf("%d spans, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name() != w.name || g.SpanKind() != w.kind {
			t.Errorf("span %d: %q %v, want %q %v", i, g.Name(), g.SpanKind(), w.name, w.kind)
		}
		if ga := g.Attributes(); !equalAttrs(ga, w.attrs) {
			t.Errorf("span %d %q attributes:\n got %v\nwant %v", i, w.name, ga, w.attrs)
		}
	}
}

func equalAttrs(a, b []attribute.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Value.String() != b[i].Value.String() || a[i].Value.Type() != b[i].Value.Type() {
			return false
		}
	}
	return true
}

// An outcome's envelope carries the trace context of its context, trace
// state included, as the propagator writes it into headers.
func TestEnvelopeTraceContext(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=value,other=x")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	o := &outcomes{source: "pathling-sync", prop: propagation.TraceContext{}, clock: clock.Or(nil)}
	env := o.envelope(ctx, "r1/completed", messages.TypeCompleted, "t1")
	h := natsHeader{}
	o.prop.Inject(ctx, h)
	if env.TraceParent != h.Get("traceparent") || env.TraceState != h.Get("tracestate") || env.TraceState != "vendor=value,other=x" {
		t.Errorf("envelope trace context %q %q, headers %v", env.TraceParent, env.TraceState, h)
	}
	if env := o.envelope(context.Background(), "r1/completed", messages.TypeCompleted, "t1"); env.TraceParent != "" || env.TraceState != "" {
		t.Errorf("no trace context: %q %q", env.TraceParent, env.TraceState)
	}
}
