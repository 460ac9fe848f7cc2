package chains

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// recorder is a Publisher that records what it is given.
type recorder struct {
	mu    sync.Mutex
	sent  []sent
	fails int // fail this many publishes first
}

type sent struct {
	subject string
	env     messages.Envelope
	req     messages.SyncRequested
}

func (r *recorder) Publish(_ context.Context, subject string, env messages.Envelope, body []byte) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails > 0 {
		r.fails--
		return false, errors.New("nats: timeout")
	}
	req, err := messages.DecodeRequested(body)
	if err != nil {
		return false, fmt.Errorf("chained request does not decode: %w", err)
	}
	for _, s := range r.sent {
		if s.env.ID == env.ID {
			return true, nil
		}
	}
	r.sent = append(r.sent, sent{subject: subject, env: env, req: req})
	return false, nil
}

func (r *recorder) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.sent...)
}

func TestMatches(t *testing.T) {
	rule := Rule{Name: "r", On: Trigger{Target: "a", Types: []string{"Patient", "Observation"}, NonEmpty: true}, Target: "b"}
	done := func(edit func(*messages.SyncCompleted)) messages.SyncCompleted {
		c := messages.SyncCompleted{RequestID: "x", Outputs: 3, Types: []string{"Patient", "Observation", "Condition"}}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		target string
		c      messages.SyncCompleted
		want   bool
	}{
		{"matching", "a", done(nil), true},
		{"other target", "b", done(nil), false},
		{"all types (none named)", "a", done(func(c *messages.SyncCompleted) { c.Types = nil }), true},
		{"a listed type missing", "a", done(func(c *messages.SyncCompleted) { c.Types = []string{"Patient"} }), false},
		{"empty incremental", "a", done(func(c *messages.SyncCompleted) { c.Empty, c.Outputs = true, 0 }), false},
		{"no files", "a", done(func(c *messages.SyncCompleted) { c.Outputs = 0 }), false},
	} {
		if got := rule.Matches(tc.target, tc.c); got != tc.want {
			t.Errorf("%s: Matches = %t", tc.name, got)
		}
	}
	unconditional := Rule{Name: "r", On: Trigger{Target: "a"}, Target: "b"}
	if !unconditional.Matches("a", messages.SyncCompleted{Empty: true}) {
		t.Error("a rule without conditions must fire on an empty sync too")
	}
}

func TestDepth(t *testing.T) {
	for id, want := range map[string]int{
		"abc": 0, "chain:r:abc": 1, "chain:r:chain:s:abc": 2, "chain:r": 0, "schedule:t:n:2026-01-01T00:00:00Z": 0,
		"chain:r:schedule:t:n:2026-01-01T00:00:00Z": 1,
	} {
		if got := depth(id); got != want {
			t.Errorf("depth(%q) = %d, want %d", id, got, want)
		}
	}
}

// completedMsg is a SyncCompleted as the subscriber hands it to the handler.
func completedMsg(t *testing.T, target string, c messages.SyncCompleted, traceparent string) *message.Message {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage(messages.CompletedID(c.RequestID), body)
	messages.Envelope{ID: messages.CompletedID(c.RequestID), Source: "pathling-sync", Type: messages.TypeCompleted,
		Subject: target, Time: time.Now(), TraceParent: traceparent, TraceState: "vendor=1"}.WriteTo(msg.Metadata)
	msg.Metadata.Set(MetadataSubject, "pathling.sync.completed."+target)
	msg.SetContext(context.Background())
	return msg
}

// chainTime is what the tests' clock says: ce-time of the chained requests.
var chainTime = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const parentTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestHandleCarriesCorrelationAndTrace(t *testing.T) {
	pub := &recorder{}
	c, err := New([]Rule{
		{Name: "to-replica", On: Trigger{Target: "default", NonEmpty: true}, Target: "replica",
			Request: messages.SyncRequested{Since: "auto", Types: []string{"Patient"}}},
		{Name: "to-archive", On: Trigger{Target: "default"}, Target: "archive",
			Request: messages.SyncRequested{SaveMode: "overwrite"}},
		{Name: "unrelated", On: Trigger{Target: "other"}, Target: "archive"},
	}, pub, WithSource("replica-2"), WithClock(clock.Func(func() time.Time { return chainTime })))
	if err != nil {
		t.Fatal(err)
	}
	done := messages.SyncCompleted{RequestID: "req-1", Target: "default", Outputs: 4, CorrelationID: "corr-9"}
	if err := c.Handle(completedMsg(t, "default", done, parentTrace)); err != nil {
		t.Fatal(err)
	}
	got := pub.all()
	if len(got) != 2 {
		t.Fatalf("published %d requests, want 2: %+v", len(got), got)
	}
	byID := map[string]sent{}
	for _, s := range got {
		byID[s.env.ID] = s
	}
	r, ok := byID["chain:to-replica:req-1"]
	if !ok {
		t.Fatalf("no chain:to-replica:req-1 in %+v", got)
	}
	if r.subject != "pathling.sync.requested.replica" || r.env.Subject != "replica" || r.env.Type != messages.TypeRequested ||
		r.env.Source != "replica-2" || !r.env.Time.Equal(chainTime) {
		t.Errorf("envelope %+v on %s", r.env, r.subject)
	}
	want := messages.SyncRequested{Since: "auto", Types: []string{"Patient"}, CorrelationID: "corr-9", RequestedBy: "chain:to-replica"}
	if fmt.Sprint(r.req) != fmt.Sprint(want) {
		t.Errorf("request %+v, want %+v", r.req, want)
	}
	if r.env.TraceParent != parentTrace || r.env.TraceState != "vendor=1" {
		t.Errorf("trace context not carried: %q %q", r.env.TraceParent, r.env.TraceState)
	}
	if a := byID["chain:to-archive:req-1"]; a.req.SaveMode != "overwrite" || a.req.CorrelationID != "corr-9" {
		t.Errorf("second rule: %+v", a)
	}

	// Without a correlation id the completed request id becomes one, so
	// that the chain's syncs can be found together.
	done = messages.SyncCompleted{RequestID: "req-2", Target: "default", Outputs: 1}
	if err := c.Handle(completedMsg(t, "default", done, "")); err != nil {
		t.Fatal(err)
	}
	for _, s := range pub.all()[2:] {
		if s.req.CorrelationID != "req-2" || s.env.TraceParent != "" {
			t.Errorf("%s: correlation %q traceparent %q", s.env.ID, s.req.CorrelationID, s.env.TraceParent)
		}
	}
}

// The same SyncCompleted handled twice (a redelivery) gives the same ids.
func TestHandleIsDeterministic(t *testing.T) {
	pub := &recorder{}
	c, err := New([]Rule{{Name: "r", On: Trigger{Target: "a"}, Target: "b"}}, pub)
	if err != nil {
		t.Fatal(err)
	}
	done := messages.SyncCompleted{RequestID: "req-1", Outputs: 1}
	for range 2 {
		if err := c.Handle(completedMsg(t, "a", done, parentTrace)); err != nil {
			t.Fatal(err)
		}
	}
	if got := pub.all(); len(got) != 1 || got[0].env.ID != "chain:r:req-1" {
		t.Fatalf("published %+v", got)
	}
}

func TestHandleWithTracerContinuesTheTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	pub := &recorder{}
	c, err := New([]Rule{{Name: "r", On: Trigger{Target: "a"}, Target: "b"}}, pub, WithTracer(tp.Tracer("test")))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(completedMsg(t, "a", messages.SyncCompleted{RequestID: "req-1", Outputs: 1}, parentTrace)); err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	sc := spans[0].SpanContext()
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || spans[0].Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %v not a child of the completed event's span", sc)
	}
	want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
	if got := pub.all()[0].env.TraceParent; got != want {
		t.Errorf("traceparent %q, want %q", got, want)
	}
}

func TestHandleRejectsWhatItCannotRead(t *testing.T) {
	pub := &recorder{}
	c, err := New([]Rule{{Name: "r", On: Trigger{Target: "a"}, Target: "b"}}, pub)
	if err != nil {
		t.Fatal(err)
	}
	garbage := message.NewMessage("x", []byte("{not json"))
	garbage.SetContext(context.Background())
	noID := completedMsg(t, "a", messages.SyncCompleted{Outputs: 1}, "")
	failed := completedMsg(t, "a", messages.SyncCompleted{RequestID: "q", Outputs: 1}, "")
	failed.Metadata.Set(messages.HeaderType, messages.TypeFailed)
	for name, m := range map[string]*message.Message{"garbage": garbage, "no request id": noID, "a SyncFailed": failed} {
		if err := c.Handle(m); !errors.Is(err, ErrUndecodable) || !permanent(err) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if len(pub.all()) != 0 {
		t.Errorf("published %+v", pub.all())
	}
	// A publish failure is not permanent: the message is retried.
	pub.fails = 1
	err = c.Handle(completedMsg(t, "a", messages.SyncCompleted{RequestID: "q", Outputs: 1}, ""))
	if err == nil || permanent(err) {
		t.Errorf("publish failure: err = %v", err)
	}
}

func TestHandleStopsRunawayChains(t *testing.T) {
	pub := &recorder{}
	c, err := New([]Rule{{Name: "loop", On: Trigger{Target: "a"}, Target: "a"}}, pub)
	if err != nil {
		t.Fatal(err)
	}
	id := "req"
	for range MaxDepth + 2 {
		if err := c.Handle(completedMsg(t, "a", messages.SyncCompleted{RequestID: id, Outputs: 1}, "")); err != nil {
			t.Fatal(err)
		}
		id = RequestID("loop", id)
	}
	if n := len(pub.all()); n != MaxDepth {
		t.Errorf("%d hops, want %d", n, MaxDepth)
	}
	if last := pub.all()[len(pub.all())-1].env.ID; strings.Count(last, "chain:loop:") != MaxDepth {
		t.Errorf("last id %q", last)
	}
}

func TestNewRejects(t *testing.T) {
	pub := &recorder{}
	for name, rules := range map[string][]Rule{
		"bad name":      {{Name: "a:b", On: Trigger{Target: "a"}, Target: "b"}},
		"twice":         {{Name: "r", On: Trigger{Target: "a"}, Target: "b"}, {Name: "r", On: Trigger{Target: "a"}, Target: "c"}},
		"no target":     {{Name: "r", On: Trigger{Target: "a"}}},
		"bad on types":  {{Name: "r", On: Trigger{Target: "a", Types: []string{"x"}}, Target: "b"}},
		"bad request":   {{Name: "r", On: Trigger{Target: "a"}, Target: "b", Request: messages.SyncRequested{Concurrency: "maybe"}}},
		"bad on target": {{Name: "r", On: Trigger{Target: "a.b"}, Target: "b"}},
	} {
		if _, err := New(rules, pub); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := New(nil, nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil publisher: %v", err)
	}
}
