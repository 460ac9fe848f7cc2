package schedules_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/schedules"
)

// jsPublisher is the publisher cmd wires: natsbus.PublishRequest.
type jsPublisher struct {
	js       jetstream.JetStream
	stored   atomic.Int64
	dupes    atomic.Int64
	failNext atomic.Int64 // fail this many publishes before publishing
}

func (p *jsPublisher) Publish(ctx context.Context, subject string, env messages.Envelope, body []byte) (bool, error) {
	if p.failNext.Add(-1) >= 0 {
		return false, errors.New("injected publish failure")
	}
	ack, err := natsbus.PublishRequest(ctx, p.js, subject, env, body)
	if err != nil {
		return false, err
	}
	if ack.Duplicate {
		p.dupes.Add(1)
	} else {
		p.stored.Add(1)
	}
	return ack.Duplicate, nil
}

// stream starts an embedded JetStream with the contract's stream.
func stream(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns := testenv.NATS(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, js, natsbus.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	return js
}

// storedRequest is one SyncRequested as the stream holds it.
type storedRequest struct {
	subject string
	header  nats.Header
	body    messages.SyncRequested
}

// requests reads every message of the stream, in order.
func requests(t *testing.T, js jetstream.JetStream) []storedRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, natsbus.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRequest
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		req, err := messages.DecodeRequested(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		out = append(out, storedRequest{subject: m.Subject, header: m.Header, body: req})
	}
	return out
}

func ids(rs []storedRequest) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.header.Get(messages.HeaderID))
	}
	return out
}

func mustParse(t *testing.T, expr string) schedules.Schedule {
	t.Helper()
	spec, err := schedules.Parse(expr)
	if err != nil {
		t.Fatal(err)
	}
	return schedules.Schedule{Target: "default", Name: "every5", Spec: spec}
}

// start runs a scheduler until the test ends.
func start(t *testing.T, s *schedules.Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("scheduler did not stop")
		}
	})
}

func idle(t *testing.T, clocks ...*fakeClock) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, c := range clocks {
			if c.Waiters() == 0 {
				return false
			}
		}
		return true
	}, "schedulers waiting for their next tick")
}

// Three replicas (three schedulers on one stream, with clocks up to 2 s
// apart) publish exactly one SyncRequested per tick, with the tick's id.
func TestThreeReplicasOneRequestPerTick(t *testing.T) {
	js := stream(t)
	pub := &jsPublisher{js: js}
	start0 := time.Date(2026, 3, 1, 10, 2, 30, 0, time.UTC)
	skews := []time.Duration{0, 700 * time.Millisecond, 2 * time.Second}
	var clocks []*fakeClock
	for range skews {
		c := newFakeClock(start0)
		clocks = append(clocks, c)
		s, err := schedules.New(pub, []schedules.Schedule{mustParse(t, "*/5 * * * *")}, schedules.WithClock(c))
		if err != nil {
			t.Fatal(err)
		}
		start(t, s)
	}
	idle(t, clocks...)
	if got := requests(t, js); len(got) != 0 {
		t.Fatalf("published before the first tick: %v", ids(got))
	}

	var want []string
	for k := 1; k <= 4; k++ {
		tick := time.Date(2026, 3, 1, 10, 5*k, 0, 0, time.UTC)
		for i, c := range clocks {
			c.Set(tick.Add(skews[i]))
		}
		// Each scheduler publishes (and waits for the stream's ack) before
		// it waits again: once all wait, the tick is settled.
		idle(t, clocks...)
		want = append(want, fmt.Sprintf("schedule:default:every5:2026-03-01T10:%02d:00Z", 5*k))
		got := requests(t, js)
		if !slices.Equal(ids(got), want) {
			t.Fatalf("after tick %d: stream holds %v, want %v", k, ids(got), want)
		}
	}
	if s, d := pub.stored.Load(), pub.dupes.Load(); s != 4 || d != 8 {
		t.Errorf("stored %d, duplicates %d; want 4 and 8", s, d)
	}
	for _, r := range requests(t, js) {
		if r.subject != "pathling.sync.requested.default" || r.header.Get(messages.HeaderNatsMsgID) != r.header.Get(messages.HeaderID) ||
			r.header.Get(messages.HeaderType) != messages.TypeRequested || r.header.Get(messages.HeaderSubject) != "default" {
			t.Errorf("envelope: subject %s headers %v", r.subject, r.header)
		}
		if r.body.RequestedBy != "schedule:every5" {
			t.Errorf("requestedBy = %q", r.body.RequestedBy)
		}
	}
}

// A scheduler that wakes late publishes only the latest due tick.
func TestLateWakeUpPublishesLatestTickOnly(t *testing.T) {
	js := stream(t)
	c := newFakeClock(time.Date(2026, 3, 1, 10, 2, 30, 0, time.UTC))
	s, err := schedules.New(&jsPublisher{js: js}, []schedules.Schedule{mustParse(t, "*/5 * * * *")}, schedules.WithClock(c))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	idle(t, c)
	c.Set(time.Date(2026, 3, 1, 10, 21, 0, 0, time.UTC)) // 10:05, 10:10, 10:15, 10:20 due
	idle(t, c)
	if got := ids(requests(t, js)); !slices.Equal(got, []string{"schedule:default:every5:2026-03-01T10:20:00Z"}) {
		t.Fatalf("published %v", got)
	}
}

func TestCatchUp(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 7, 10, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		catchUp bool
		want    []string
	}{
		{"off: no back-fill", false, nil},
		{"on: the latest tick before start-up", true, []string{"schedule:default:every5:2026-03-01T10:05:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := stream(t)
			c := newFakeClock(now)
			sc := mustParse(t, "*/5 * * * *")
			sc.CatchUp = tc.catchUp
			s, err := schedules.New(&jsPublisher{js: js}, []schedules.Schedule{sc}, schedules.WithClock(c))
			if err != nil {
				t.Fatal(err)
			}
			start(t, s)
			idle(t, c)
			if got := ids(requests(t, js)); !slices.Equal(got, tc.want) {
				t.Fatalf("at start-up: %v, want %v", got, tc.want)
			}
			c.Set(time.Date(2026, 3, 1, 10, 10, 0, 0, time.UTC))
			idle(t, c)
			want := append(tc.want, "schedule:default:every5:2026-03-01T10:10:00Z")
			if got := ids(requests(t, js)); !slices.Equal(got, want) {
				t.Fatalf("after the next tick: %v, want %v", got, want)
			}
		})
	}
}

// Catch-up by two replicas of a tick one of them already published is
// dropped by the stream (same id).
func TestCatchUpByEveryReplicaIsOneRequest(t *testing.T) {
	js := stream(t)
	now := time.Date(2026, 3, 1, 2, 30, 0, 0, time.UTC)
	spec, _ := schedules.Parse("0 2 * * *")
	sc := schedules.Schedule{Target: "default", Name: "nightly", Spec: spec, CatchUp: true}
	var clocks []*fakeClock
	for range 3 {
		c := newFakeClock(now)
		clocks = append(clocks, c)
		s, err := schedules.New(&jsPublisher{js: js}, []schedules.Schedule{sc}, schedules.WithClock(c))
		if err != nil {
			t.Fatal(err)
		}
		start(t, s)
	}
	idle(t, clocks...)
	if got := ids(requests(t, js)); !slices.Equal(got, []string{"schedule:default:nightly:2026-03-01T02:00:00Z"}) {
		t.Fatalf("published %v", got)
	}
}

// A schedule's request block overrides the target's defaults, e.g. a
// nightly full overwrite (the only way to drop deleted resources).
func TestScheduleRequestOverrides(t *testing.T) {
	js := stream(t)
	c := newFakeClock(time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC))
	spec, _ := schedules.Parse("0 2 * * *")
	sc := schedules.Schedule{Target: "analytics", Name: "nightly-full", Spec: spec, Request: messages.SyncRequested{
		SaveMode: messages.SaveModeOverwrite, Types: []string{"Patient", "Observation"}, Timeout: "3h",
		ExportURL: "https://ehr.example.org/fhir",
	}}
	s, err := schedules.New(&jsPublisher{js: js}, []schedules.Schedule{sc}, schedules.WithClock(c),
		schedules.WithSource("replica-7"), schedules.WithSubjects(messages.Subjects{Prefix: "pathling.sync"}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	idle(t, c)
	c.Set(time.Date(2026, 3, 1, 2, 0, 0, 400_000_000, time.UTC))
	idle(t, c)
	got := requests(t, js)
	if len(got) != 1 {
		t.Fatalf("published %v", ids(got))
	}
	r := got[0]
	want := messages.SyncRequested{SaveMode: "overwrite", Types: []string{"Patient", "Observation"}, Timeout: "3h",
		ExportURL: "https://ehr.example.org/fhir", RequestedBy: "schedule:nightly-full"}
	b1, _ := json.Marshal(r.body)
	b2, _ := json.Marshal(want)
	if string(b1) != string(b2) {
		t.Errorf("body %s, want %s", b1, b2)
	}
	if r.subject != "pathling.sync.requested.analytics" || r.header.Get(messages.HeaderID) != "schedule:analytics:nightly-full:2026-03-01T02:00:00Z" {
		t.Errorf("subject %s id %s", r.subject, r.header.Get(messages.HeaderID))
	}
	if r.header.Get(messages.HeaderTime) != "2026-03-01T02:00:00Z" || r.header.Get(messages.HeaderSource) != "replica-7" {
		t.Errorf("ce-time %q (want the tick) ce-source %q", r.header.Get(messages.HeaderTime), r.header.Get(messages.HeaderSource))
	}
	if r.header.Get(messages.HeaderTraceParent) != "" {
		t.Errorf("traceparent without a tracer: %q", r.header.Get(messages.HeaderTraceParent))
	}
}

// Failed publishes are retried with backoff (same id); a tick whose
// publishes fail until the next tick is given up for that one.
func TestPublishRetry(t *testing.T) {
	js := stream(t)
	pub := &jsPublisher{js: js}
	pub.failNext.Store(2)
	c := newFakeClock(time.Date(2026, 3, 1, 10, 2, 30, 0, time.UTC))
	s, err := schedules.New(pub, []schedules.Schedule{mustParse(t, "*/5 * * * *")}, schedules.WithClock(c),
		schedules.WithRetry(time.Second, 4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	idle(t, c)
	c.Set(time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC))
	idle(t, c) // failed once, waits 1 s
	c.Set(time.Date(2026, 3, 1, 10, 5, 1, 0, time.UTC))
	idle(t, c) // failed twice, waits 2 s
	if n := len(requests(t, js)); n != 0 {
		t.Fatalf("%d requests while publishing fails", n)
	}
	c.Set(time.Date(2026, 3, 1, 10, 5, 3, 0, time.UTC))
	idle(t, c)
	if got := ids(requests(t, js)); !slices.Equal(got, []string{"schedule:default:every5:2026-03-01T10:05:00Z"}) {
		t.Fatalf("after retries: %v", got)
	}

	// Publishing fails for good: retries stop before the next tick, which
	// is published when publishing works again.
	pub.failNext.Store(1 << 30)
	for sec := 0; sec < 5*60; {
		c.Set(time.Date(2026, 3, 1, 10, 10, sec, 0, time.UTC))
		idle(t, c)
		sec += 4
	}
	pub.failNext.Store(0)
	c.Set(time.Date(2026, 3, 1, 10, 15, 0, 0, time.UTC))
	idle(t, c)
	want := []string{"schedule:default:every5:2026-03-01T10:05:00Z", "schedule:default:every5:2026-03-01T10:15:00Z"}
	if got := ids(requests(t, js)); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// With a tracer each tick starts a new trace, carried in traceparent.
func TestTickStartsATrace(t *testing.T) {
	js := stream(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	c := newFakeClock(time.Date(2026, 3, 1, 10, 2, 30, 0, time.UTC))
	s, err := schedules.New(&jsPublisher{js: js}, []schedules.Schedule{mustParse(t, "*/5 * * * *")}, schedules.WithClock(c),
		schedules.WithTracer(tp.Tracer("test")))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	idle(t, c)
	c.Set(time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC))
	idle(t, c)
	got := requests(t, js)
	if len(got) != 1 {
		t.Fatalf("published %d", len(got))
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended", len(spans))
	}
	sc := spans[0].SpanContext()
	want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
	if tp := got[0].header.Get(messages.HeaderTraceParent); tp != want {
		t.Errorf("traceparent %q, want %q", tp, want)
	}
}

func TestNewRejects(t *testing.T) {
	spec, _ := schedules.Parse("@hourly")
	pub := &jsPublisher{}
	for name, sc := range map[string][]schedules.Schedule{
		"bad target":   {{Target: "a b", Name: "n", Spec: spec}},
		"bad name":     {{Target: "a", Name: "n:x", Spec: spec}},
		"no spec":      {{Target: "a", Name: "n"}},
		"twice":        {{Target: "a", Name: "n", Spec: spec}, {Target: "a", Name: "n", Spec: spec}},
		"bad request":  {{Target: "a", Name: "n", Spec: spec, Request: messages.SyncRequested{SaveMode: "merj"}}},
		"bad instants": {{Target: "a", Name: "n", Spec: spec, Request: messages.SyncRequested{Since: "yesterday"}}},
	} {
		if _, err := schedules.New(pub, sc); !errors.Is(err, schedules.ErrInvalidSchedule) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := schedules.New(nil, nil); !errors.Is(err, schedules.ErrInvalidOption) {
		t.Errorf("nil publisher: %v", err)
	}
}
