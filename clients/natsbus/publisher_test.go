package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

func completedEvent() handlers.Event {
	return handlers.Event{
		Subject: messages.Subjects{}.Completed("t1"),
		Envelope: messages.Envelope{
			ID:          messages.CompletedID("req-1"),
			Source:      "pathling-sync/test",
			Type:        messages.TypeCompleted,
			Subject:     "t1",
			Time:        time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC),
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			TraceState:  "vendor=value",
		},
		Body: json.RawMessage(`{"requestId":"req-1","target":"t1"}`),
	}
}

// written is the header set Envelope.WriteTo produces.
func written(env messages.Envelope) nats.Header {
	h := nats.Header{}
	env.WriteTo(h)
	return h
}

func TestPublisherDeduplicatesAndWritesHeadersExactly(t *testing.T) {
	b := newBus(t)
	p, err := NewPublisher(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	e := completedEvent()
	for i := range 3 {
		if err := p.Publish(context.Background(), e); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages after 3 publishes of one event, want 1", info.State.Msgs)
	}

	got, err := b.stream.GetMsg(context.Background(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "pathling.sync.completed.t1" || string(got.Data) != string(e.Body) {
		t.Fatalf("message = %s %s", got.Subject, got.Data)
	}
	want := written(e.Envelope)
	for _, k := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject",
		"content-type", "traceparent", "tracestate", "Nats-Msg-Id"} {
		if _, ok := want[k]; !ok {
			t.Fatalf("test assumption: WriteTo did not write %q", k)
		}
	}
	for k, v := range want {
		if !slices.Equal(got.Header[k], v) {
			t.Errorf("header %q = %q, want %q", k, got.Header[k], v)
		}
	}
	// No other header.
	extra := maps.Clone(got.Header)
	maps.DeleteFunc(extra, func(k string, _ []string) bool { _, ok := want[k]; return ok })
	if len(extra) != 0 {
		t.Errorf("unexpected extra headers: %v", extra)
	}
	if got.Header.Get("Nats-Msg-Id") != "req-1/completed" {
		t.Errorf("Nats-Msg-Id = %q", got.Header.Get("Nats-Msg-Id"))
	}
	env, ok := messages.ReadEnvelope(got.Header)
	if !ok || !env.Time.Equal(e.Envelope.Time) || env.TraceParent != e.Envelope.TraceParent || env.ID != e.Envelope.ID {
		t.Errorf("read back envelope %+v", env)
	}
}

// An outcome on the wire carries the envelope's headers and nothing of a
// library's own: no _watermill_* header (consumers see the raw headers).
func TestPublishedOutcomeHasNoWatermillHeader(t *testing.T) {
	b := newBus(t)
	p, err := NewPublisher(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), completedEvent()); err != nil {
		t.Fatal(err)
	}
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.stream.GetMsg(context.Background(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	for k := range raw.Header {
		if strings.HasPrefix(strings.ToLower(k), "_watermill") {
			t.Errorf("published outcome carries header %s=%q", k, raw.Header[k])
		}
	}
}

func TestPublisherRespectsContext(t *testing.T) {
	b := newBus(t)
	p, err := NewPublisher(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ctx, completedEvent()); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("cancelled publish stored %d messages", info.State.Msgs)
	}
}

func TestPublisherFailsWithoutAck(t *testing.T) {
	b := newBus(t)
	p, err := NewPublisher(b.nc, WithPublishTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	e := completedEvent()
	e.Subject = "elsewhere.completed.t1" // no stream takes it: no ack can come
	begin := time.Now()
	if err := p.Publish(context.Background(), e); err == nil {
		t.Fatal("publish without a stream succeeded")
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("failed publish took %s", took)
	}
}

func TestPublisherRejectsEventWithoutID(t *testing.T) {
	b := newBus(t)
	p, err := NewPublisher(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	e := completedEvent()
	e.Envelope.ID = ""
	if err := p.Publish(context.Background(), e); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewPublisher(b.nc, WithPublishTimeout(0)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("zero timeout: err = %v", err)
	}
}

func TestPublishRequestDeduplicatesAndWritesHeadersExactly(t *testing.T) {
	b := newBus(t)
	env := messages.Envelope{ID: "req-9", Source: "cli", Type: messages.TypeRequested, Subject: "t1",
		Time: time.Now(), TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	subject := messages.Subjects{}.Requested("t1")
	ack1, err := PublishRequest(context.Background(), b.js, subject, env, []byte(`{"saveMode":"merge"}`))
	if err != nil {
		t.Fatal(err)
	}
	ack2, err := PublishRequest(context.Background(), b.js, subject, env, []byte(`{"saveMode":"merge"}`))
	if err != nil {
		t.Fatal(err)
	}
	if ack1.Duplicate || !ack2.Duplicate || ack2.Sequence != ack1.Sequence {
		t.Fatalf("acks %+v %+v", ack1, ack2)
	}
	got, err := b.stream.GetMsg(context.Background(), ack1.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if want := written(env); !maps.EqualFunc(map[string][]string(got.Header), map[string][]string(want), slices.Equal) {
		t.Fatalf("headers %v, want exactly %v", got.Header, want)
	}
}
