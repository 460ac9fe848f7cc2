package handlers_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/pathling"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/observability"
)

// tracedEnv runs a Syncer whose spans, and whose Pathling client's HTTP
// spans, go to an in-memory recorder.
func tracedEnv(t *testing.T) (*env, *tracetest.SpanRecorder) {
	t.Helper()
	e := newEnv(t, envOptions{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	hc := &http.Client{Transport: observability.NewTransport(nil, observability.TransportConfig{
		Target: "t1", TracerProvider: tp, ResendCount: pathling.ResendCount,
	})}
	c, err := pathling.New(e.emuURL, pathling.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	target := e.target(func(t *handlers.Target) { t.Pathling = pathling.NewPort(c) })
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{target}, Subjects: e.subjects, LockTTL: 3 * time.Second,
		QueueRetry: 30 * time.Millisecond, StoreRetry: 50 * time.Millisecond,
		TracerProvider: tp, ConsumerGroup: "pathling-sync",
	}, e.ports(e.store))
	if err != nil {
		t.Fatal(err)
	}
	e.start(e.js, s, 0)
	return e, rec
}

func publishTraced(t *testing.T, e *env, id, body, traceParent string) {
	t.Helper()
	env := messages.Envelope{ID: id, Source: "test", Type: messages.TypeRequested, Subject: "t1",
		ContentType: messages.ContentTypeJSON, Time: time.Now(), TraceParent: traceParent}
	if _, err := natsbus.PublishRequest(context.Background(), e.js, e.subjects.Requested("t1"), env, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// spansOf waits until the recorder holds an ended span named name in trace
// traceID, then returns all ended spans of that trace.
func spansOf(t *testing.T, rec *tracetest.SpanRecorder, traceID, name string) []sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	testenv.Eventually(t, waitLong, func() bool {
		out = out[:0]
		found := false
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == traceID {
				out = append(out, s)
				found = found || s.Name() == name
			}
		}
		return found
	}, "span %q in trace %s", name, traceID)
	return out
}

func byName(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	found := byName(spans, name)
	if len(found) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("%d spans named %q, want 1 (spans: %s)", len(found), name, strings.Join(names, ", "))
	}
	return found[0]
}

func childOf(t *testing.T, child, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if child.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("span %q: parent %s, want %q (%s)", child.Name(), child.Parent().SpanID(), parent.Name(), parent.SpanContext().SpanID())
	}
}

// One trace from the request's traceparent to the outcome's: the consumer
// span, lock, kick-off (with its HTTP span), a short span per poll (each
// with its HTTP span), the watermark commit and the producer span, which is
// the outcome's traceparent.
func TestSyncIsOneTrace(t *testing.T) {
	e, rec := tracedEnv(t)
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 2}); err != nil {
		t.Fatal(err)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentSpan = "00f067aa0ba902b7"
	publishTraced(t, e, "traced-1", `{}`, "00-"+traceID+"-"+parentSpan+"-01")
	o := e.outcomes.of(t, "traced-1", waitLong)
	polls := o.completedBody(t).Polls

	spans := spansOf(t, rec, traceID, "process pathling.sync.requested.t1")
	consumer := one(t, spans, "process pathling.sync.requested.t1")
	if consumer.SpanKind() != trace.SpanKindConsumer || consumer.Parent().SpanID().String() != parentSpan || !consumer.Parent().IsRemote() {
		t.Errorf("consumer span: kind %s, parent %s (remote %v)", consumer.SpanKind(), consumer.Parent().SpanID(), consumer.Parent().IsRemote())
	}
	ca := spanAttrs(consumer)
	for k, want := range map[attribute.Key]string{
		"messaging.system": "nats", "messaging.operation.type": "process", "messaging.operation.name": "process",
		"messaging.destination.name": "pathling.sync.requested.t1", "messaging.message.id": "traced-1",
		"messaging.consumer.group.name": "pathling-sync", "cloudevents.event_id": "traced-1",
		"cloudevents.event_type": messages.TypeRequested, "cloudevents.event_source": "test",
		"cloudevents.event_spec_version": "1.0", "cloudevents.event_subject": "t1",
		"pathling_sync.target": "t1", "pathling_sync.request_id": "traced-1",
		"pathling_sync.outcome": "completed", "pathling_sync.disposition": "ack",
	} {
		if got := ca[k].String(); got != want {
			t.Errorf("consumer span %s = %q, want %q", k, got, want)
		}
	}
	if ca["pathling_sync.run_id"].AsString() == "" {
		t.Errorf("consumer span has no run id")
	}

	lock := one(t, spans, handlers.SpanLock)
	childOf(t, lock, consumer)
	if la := spanAttrs(lock); la["pathling_sync.lock.result"].AsString() != "acquired" || la["pathling_sync.adopted"].AsBool() {
		t.Errorf("lock span attributes: %v", lock.Attributes())
	}
	kick := one(t, spans, handlers.SpanKickOff)
	childOf(t, kick, consumer)
	kickHTTP := one(t, spans, "POST /fhir/$import-pnp")
	childOf(t, kickHTTP, kick)
	if kickHTTP.SpanKind() != trace.SpanKindClient || spanAttrs(kickHTTP)["http.response.status_code"].AsInt64() != 202 {
		t.Errorf("kick-off HTTP span: %s %v", kickHTTP.SpanKind(), kickHTTP.Attributes())
	}
	pollSpans := byName(spans, handlers.SpanPoll)
	pollHTTP := byName(spans, "GET /fhir/$job")
	if len(pollSpans) != polls || len(pollHTTP) != polls || polls != 3 {
		t.Fatalf("%d poll spans and %d HTTP poll spans for %d polls (script: 2 running + 1 done)", len(pollSpans), len(pollHTTP), polls)
	}
	for i, p := range pollSpans {
		childOf(t, p, consumer)
		childOf(t, pollHTTP[i], p)
		want := "running"
		if i == len(pollSpans)-1 {
			want = "done"
		}
		if pa := spanAttrs(p); pa["pathling_sync.poll"].AsInt64() != int64(i+1) || pa["pathling_sync.job.state"].AsString() != want {
			t.Errorf("poll span %d: %v", i, p.Attributes())
		}
		if i > 0 && !pollSpans[i-1].EndTime().Before(p.StartTime()) {
			t.Errorf("poll spans overlap: a poll span must not include the wait")
		}
	}
	wm := one(t, spans, handlers.SpanWatermark)
	childOf(t, wm, consumer)
	childOf(t, one(t, spans, "DELETE /fhir/$job"), consumer)

	pub := one(t, spans, "publish pathling.sync.completed.t1")
	childOf(t, pub, consumer)
	if pub.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span kind %s", pub.SpanKind())
	}
	pa := spanAttrs(pub)
	for k, want := range map[attribute.Key]string{
		"messaging.system": "nats", "messaging.operation.type": "send", "messaging.destination.name": "pathling.sync.completed.t1",
		"messaging.message.id": "traced-1/completed", "cloudevents.event_id": "traced-1/completed",
		"cloudevents.event_type": messages.TypeCompleted,
	} {
		if got := pa[k].String(); got != want {
			t.Errorf("publish span %s = %q, want %q", k, got, want)
		}
	}
	// The outcome's traceparent IS the producer span.
	want := fmt.Sprintf("00-%s-%s-01", traceID, pub.SpanContext().SpanID())
	if tp := o.Header.Get("traceparent"); tp != want {
		t.Errorf("outcome traceparent %q, want the producer span %q", tp, want)
	}
	for _, s := range spans {
		if s.SpanContext().TraceID().String() != traceID {
			t.Errorf("span %q in another trace", s.Name())
		}
	}
}

// Bad input: the SyncFailed is published under a producer span, and the
// consumer span is an error with the reason.
func TestBadInputTraced(t *testing.T) {
	e, rec := tracedEnv(t)
	const traceID = "5bf92f3577b34da6a3ce929d0e0e4736"
	publishTraced(t, e, "bad-1", `{"saveMode": 7}`, "00-"+traceID+"-00f067aa0ba902b7-01")
	o := e.outcomes.of(t, "bad-1", waitLong)
	spans := spansOf(t, rec, traceID, "process pathling.sync.requested.t1")
	consumer := one(t, spans, "process pathling.sync.requested.t1")
	if consumer.Status().Code != codes.Error || consumer.Status().Description != "invalid_request" {
		t.Errorf("consumer span status %v", consumer.Status())
	}
	if a := spanAttrs(consumer); a["pathling_sync.disposition"].AsString() != "term" || a["pathling_sync.reason"].AsString() != "invalid_request" {
		t.Errorf("consumer span attributes %v", consumer.Attributes())
	}
	pub := one(t, spans, "publish pathling.sync.failed.t1")
	childOf(t, pub, consumer)
	if want := fmt.Sprintf("00-%s-%s-01", traceID, pub.SpanContext().SpanID()); o.Header.Get("traceparent") != want {
		t.Errorf("outcome traceparent %q, want %q", o.Header.Get("traceparent"), want)
	}
	if len(byName(spans, handlers.SpanLock)) != 0 {
		t.Errorf("bad input took the lock")
	}
}

// A redelivered finished request re-publishes its stored outcome under a
// producer span linked to the stored outcome's context.
func TestRepublishLinksStoredOutcome(t *testing.T) {
	e, rec := tracedEnv(t)
	const traceID = "6bf92f3577b34da6a3ce929d0e0e4736"
	publishTraced(t, e, "again-1", `{}`, "00-"+traceID+"-00f067aa0ba902b7-01")
	first := e.outcomes.of(t, "again-1", waitLong)
	spansOf(t, rec, traceID, "publish pathling.sync.completed.t1")

	// Publishing the same request again with a new id in Nats-Msg-Id would
	// be a new request; a redelivery is simulated by a direct Handle call.
	s, err := handlers.New(handlers.Config{Targets: []handlers.Target{e.target()}, Subjects: e.subjects,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))}, e.ports(e.store))
	if err != nil {
		t.Fatal(err)
	}
	d := e.delivery("t1", "again-1", map[string]any{}, 2)
	d.Header["traceparent"] = []string{"00-7bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if disp := s.Handle(context.Background(), d); disp.Action != handlers.Ack {
		t.Fatalf("redelivery: %v", disp.Action)
	}
	spans := spansOf(t, rec, "7bf92f3577b34da6a3ce929d0e0e4736", "process pathling.sync.requested.t1")
	pub := one(t, spans, "publish pathling.sync.completed.t1")
	if !spanAttrs(pub)["pathling_sync.republished"].AsBool() || len(pub.Links()) != 1 {
		t.Fatalf("republish span: attributes %v, links %v", pub.Attributes(), pub.Links())
	}
	if got, want := pub.Links()[0].SpanContext.SpanID().String(), strings.Split(first.Header.Get("traceparent"), "-")[2]; got != want {
		t.Errorf("republish links to span %s, want the stored outcome's %s", got, want)
	}
}
