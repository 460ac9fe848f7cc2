package messages_test

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/messages"
)

// The headers of both message libraries carry the envelope as they are.
var (
	_ messages.Header = nats.Header{}
	_ messages.Header = message.Metadata{}
	_ messages.Header = http.Header{}
)

func sampleEnvelope() messages.Envelope {
	return messages.Envelope{
		ID:          "PATHLING_SYNC:42/completed",
		Source:      "pathling-sync/replica-1",
		Type:        messages.TypeCompleted,
		Subject:     "default",
		Time:        time.Date(2025, 2, 1, 12, 0, 0, 123456789, time.FixedZone("AEST", 10*3600)),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:  "rojo=00f067aa0ba902b7",
	}
}

func TestEnvelopeWritesExactNATSHeaders(t *testing.T) {
	h := nats.Header{}
	sampleEnvelope().WriteTo(h)
	want := nats.Header{
		"ce-specversion": {"1.0"},
		"ce-id":          {"PATHLING_SYNC:42/completed"},
		"ce-source":      {"pathling-sync/replica-1"},
		"ce-type":        {"pathling.sync.completed.v1"},
		"ce-time":        {"2025-02-01T02:00:00.123456789Z"},
		"ce-subject":     {"default"},
		"content-type":   {"application/json"},
		"traceparent":    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"tracestate":     {"rojo=00f067aa0ba902b7"},
		"Nats-Msg-Id":    {"PATHLING_SYNC:42/completed"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("headers\n got: %v\nwant: %v", h, want)
	}
}

func TestEnvelopeSkipsEmptyFields(t *testing.T) {
	h := message.Metadata{}
	messages.Envelope{ID: "x", Type: messages.TypeRequested}.WriteTo(h)
	want := message.Metadata{
		"ce-specversion": "1.0", "ce-id": "x", "ce-type": "pathling.sync.requested.v1",
		"content-type": "application/json", "Nats-Msg-Id": "x",
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("metadata\n got: %v\nwant: %v", h, want)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for name, h := range map[string]messages.Header{"nats": nats.Header{}, "watermill": message.Metadata{}, "http": http.Header{}} {
		env := sampleEnvelope()
		env.ContentType = "application/json; charset=utf-8"
		env.WriteTo(h)
		got, ok := messages.ReadEnvelope(h)
		if !ok {
			t.Errorf("%s: ReadEnvelope ok = false", name)
		}
		if !got.Time.Equal(env.Time) || got.Time.Location() != time.UTC {
			t.Errorf("%s: time %v, want %v in UTC", name, got.Time, env.Time)
		}
		got.Time, env.Time = time.Time{}, time.Time{}
		if got != env {
			t.Errorf("%s: got %+v\nwant %+v", name, got, env)
		}
	}
}

func TestReadEnvelopeHeadless(t *testing.T) {
	for name, h := range map[string]messages.Header{
		"nil interface": nil, "nil nats.Header": nats.Header(nil), "empty": nats.Header{},
		"nil pointer": (*fakeHeader)(nil), "dedup id only": nats.Header{"Nats-Msg-Id": {"m-1"}},
	} {
		if env, ok := messages.ReadEnvelope(h); ok || env != (messages.Envelope{}) {
			t.Errorf("%s: ReadEnvelope = %+v, %v; want empty, false", name, env, ok)
		}
	}
	// Trace context without CloudEvents attributes: not an envelope, but the trace is kept.
	env, ok := messages.ReadEnvelope(nats.Header{"traceparent": {"00-a-b-01"}, "content-type": {"application/json"}})
	if ok || env.TraceParent != "00-a-b-01" || env.ContentType != "application/json" {
		t.Errorf("trace only: %+v, %v", env, ok)
	}
	// Any single ce-* attribute makes it an envelope.
	if _, ok := messages.ReadEnvelope(nats.Header{"ce-time": {"garbage"}}); !ok {
		t.Error("ce-time alone: ok = false")
	}
}

func TestReadEnvelopeFallsBackToOtherCase(t *testing.T) {
	h := nats.Header{
		"Ce-Specversion": {"1.0"},
		"CE-ID":          {"id-1"},
		"Traceparent":    {"00-upper-01"},
		"ce-type":        {messages.TypeRequested},
		"Ce-Type":        {"ignored: the exact name wins"},
		"ce-time":        {"not a time"},
	}
	env, ok := messages.ReadEnvelope(h)
	if !ok || env.ID != "id-1" || env.TraceParent != "00-upper-01" || env.Type != messages.TypeRequested || !env.Time.IsZero() {
		t.Errorf("got %+v, %v", env, ok)
	}
	// Several spellings: the result does not depend on map order.
	for range 20 {
		h := message.Metadata{"CE-SOURCE": "upper", "Ce-Source": "title"}
		if env, _ := messages.ReadEnvelope(h); env.Source != "upper" {
			t.Fatalf("Source = %q, want the smallest key's value", env.Source)
		}
	}
	// A non-map Header is read exactly.
	f := &fakeHeader{"CE-ID": "x"}
	if env, ok := messages.ReadEnvelope(f); ok || env.ID != "" {
		t.Errorf("non-map header: %+v, %v", env, ok)
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		name string
		h    messages.Header
		want string
	}{
		{"ce-id wins", nats.Header{"ce-id": {"ce"}, "Nats-Msg-Id": {"msg"}}, "ce"},
		{"dedup id", nats.Header{"Nats-Msg-Id": {"msg"}}, "msg"},
		{"dedup id other case", nats.Header{"nats-msg-id": {"msg"}}, "msg"},
		{"headless", nats.Header{}, "PATHLING_SYNC:42"},
		{"nil header", nil, "PATHLING_SYNC:42"},
		{"nil nats header", nats.Header(nil), "PATHLING_SYNC:42"},
	}
	for _, tc := range tests {
		if got := messages.RequestID(tc.h, "PATHLING_SYNC", 42); got != tc.want {
			t.Errorf("%s: RequestID = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// fakeHeader is a Header that is not a map.
type fakeHeader map[string]string

func (f *fakeHeader) Get(k string) string { return (*f)[k] }
func (f *fakeHeader) Set(k, v string)     { (*f)[k] = v }

// A replayed SyncRequested names its original in the ce-replayof extension attribute, and the
// attribute survives the round trip through every header type.
func TestEnvelopeReplayOf(t *testing.T) {
	env := messages.Envelope{
		ID: "replay:req-1:0a1b2c3d", Source: "pathling-sync-cli", Type: messages.TypeRequested,
		Subject: "default", ContentType: messages.ContentTypeJSON, ReplayOf: "req-1",
	}
	h := nats.Header{}
	env.WriteTo(h)
	if got := h.Values(messages.HeaderReplayOf); len(got) != 1 || got[0] != "req-1" {
		t.Fatalf("ce-replayof = %v, want [req-1] (headers %v)", got, h)
	}
	if messages.HeaderReplayOf != "ce-replayof" {
		t.Fatalf("HeaderReplayOf = %q", messages.HeaderReplayOf)
	}
	for name, h := range map[string]messages.Header{"nats": nats.Header{}, "watermill": message.Metadata{}, "http": http.Header{}} {
		env.WriteTo(h)
		got, ok := messages.ReadEnvelope(h)
		if !ok || got.ReplayOf != "req-1" || got != env {
			t.Errorf("%s: got %+v, %v; want %+v", name, got, ok, env)
		}
	}
	// Not a replay: no attribute written, none read.
	plain := nats.Header{}
	messages.Envelope{ID: "req-2", Type: messages.TypeRequested}.WriteTo(plain)
	if _, found := plain[messages.HeaderReplayOf]; found {
		t.Errorf("ce-replayof written for an event that is no replay: %v", plain)
	}
	if got, _ := messages.ReadEnvelope(plain); got.ReplayOf != "" {
		t.Errorf("ReplayOf = %q, want empty", got.ReplayOf)
	}
	// The attribute alone makes a CloudEvents envelope.
	if _, ok := messages.ReadEnvelope(nats.Header{messages.HeaderReplayOf: {"req-3"}}); !ok {
		t.Error("ce-replayof alone: ok = false")
	}
}

func TestEnvelopeCheckType(t *testing.T) {
	for _, typ := range []string{"", messages.TypeRequested} {
		if err := (messages.Envelope{Type: typ}).CheckType(messages.TypeRequested); err != nil {
			t.Errorf("ce-type %q: %v", typ, err)
		}
	}
	h := nats.Header{}
	messages.Envelope{ID: "x/completed", Type: messages.TypeCompleted}.WriteTo(h)
	env, _ := messages.ReadEnvelope(h)
	err := env.CheckType(messages.TypeRequested)
	if !errors.Is(err, messages.ErrInvalidRequest) || !strings.Contains(err.Error(), "ce-type") ||
		!strings.Contains(err.Error(), messages.TypeCompleted) || !strings.Contains(err.Error(), messages.TypeRequested) {
		t.Fatalf("CheckType of a SyncCompleted: %v", err)
	}
}

// Every publisher's request envelope has the same shape: type, content type,
// time in UTC, and the optional trace context and replay-of.
func TestNewRequestEnvelope(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	got := messages.NewRequestEnvelope("r-1", "cli", "main", at)
	want := messages.Envelope{ID: "r-1", Source: "cli", Type: messages.TypeRequested, Subject: "main",
		ContentType: messages.ContentTypeJSON, Time: at.UTC()}
	if !reflect.DeepEqual(got, want) || got.Time.Location() != time.UTC {
		t.Fatalf("plain: %+v", got)
	}
	got = messages.NewRequestEnvelope("r-2", "cli", "main", at,
		messages.WithTraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v"), messages.WithReplayOf("r-1"))
	want.ID, want.TraceParent, want.TraceState, want.ReplayOf = "r-2", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", "r-1"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("with options: %+v", got)
	}
}
