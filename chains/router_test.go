package chains_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/chains"
	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// jsPublisher publishes as cmd wires it (natsbus.PublishRequest), failing
// the first failNext publishes.
type jsPublisher struct {
	js       jetstream.JetStream
	failNext atomic.Int64
	calls    atomic.Int64
}

func (p *jsPublisher) Publish(ctx context.Context, subject string, env messages.Envelope, body []byte) (bool, error) {
	p.calls.Add(1)
	if p.failNext.Add(-1) >= 0 {
		return false, errors.New("nats: timeout")
	}
	ack, err := natsbus.PublishRequest(ctx, p.js, subject, env, body)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

type env struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *jsPublisher
	// outcomes publishes SyncCompleted the way the service does.
	outcomes *natsbus.Publisher
}

func setup(t *testing.T) *env {
	t.Helper()
	ns := testenv.NATS(t)
	nc, js := ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, js, natsbus.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	out, err := natsbus.NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js, pub: &jsPublisher{js: js}, outcomes: out}
}

var rules = []chains.Rule{{
	Name: "default-to-replica", On: chains.Trigger{Target: "default", NonEmpty: true}, Target: "replica",
	Request: messages.SyncRequested{Since: messages.SinceAuto},
}}

// router runs a chain router until the test ends (or stop is called) and
// waits until its subscription is bound.
func (e *env) router(t *testing.T, cfg chains.RouterConfig) (stop func()) {
	t.Helper()
	c, err := chains.New(rules, e.pub)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NakDelay == 0 {
		cfg.NakDelay = 50 * time.Millisecond
	}
	r, err := chains.NewRouter(e.nc, e.js, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("router did not stop")
		}
	}
	t.Cleanup(stop)
	testenv.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := e.js.PushConsumer(ctx, natsbus.DefaultStreamName, chains.DefaultDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.PushBound
	}, "chain consumer bound")
	return stop
}

// complete publishes a SyncCompleted as the service does.
func (e *env) complete(t *testing.T, target string, c messages.SyncCompleted, traceparent string) {
	t.Helper()
	body, _ := json.Marshal(c)
	err := e.outcomes.Publish(context.Background(), handlers.Event{
		Subject: messages.Subjects{}.Completed(target),
		Envelope: messages.Envelope{ID: messages.CompletedID(c.RequestID), Source: "pathling-sync", Type: messages.TypeCompleted,
			Subject: target, ContentType: messages.ContentTypeJSON, Time: time.Now(), TraceParent: traceparent},
		Body: body,
	})
	if err != nil {
		t.Fatal(err)
	}
}

type stored struct {
	subject string
	header  nats.Header
	data    []byte
}

// read returns the stream's messages on subject filter.
func (e *env) read(t *testing.T, filter string) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, natsbus.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if subjectMatches(filter, m.Subject) {
			out = append(out, stored{subject: m.Subject, header: m.Header, data: m.Data})
		}
	}
	return out
}

func subjectMatches(filter, subject string) bool {
	if f, ok := strings.CutSuffix(filter, ">"); ok {
		return strings.HasPrefix(subject, f)
	}
	return filter == subject
}

func retryFast() middleware.Retry {
	return middleware.Retry{MaxRetries: 3, InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Multiplier: 2}
}

func requestIDs(ms []stored) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.header.Get(messages.HeaderID))
	}
	return out
}

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestChainOnJetStream(t *testing.T) {
	e := setup(t)
	e.router(t, chains.RouterConfig{})

	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-1", Target: "default", Outputs: 4, CorrelationID: "corr-1"}, tp)
	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-2", Target: "default", Empty: true}, tp) // nonEmpty: no chain
	e.complete(t, "replica", messages.SyncCompleted{RequestID: "req-3", Target: "replica", Outputs: 4}, tp)  // no rule
	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-4", Target: "default", Outputs: 1}, "")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) >= 2 }, "chained requests")

	got := e.read(t, "pathling.sync.requested.>")
	if ids := requestIDs(got); !slices.Equal(ids, []string{"chain:default-to-replica:req-1", "chain:default-to-replica:req-4"}) {
		t.Fatalf("requests %v", ids)
	}
	first := got[0]
	req, err := messages.DecodeRequested(first.data)
	if err != nil {
		t.Fatal(err)
	}
	if first.subject != "pathling.sync.requested.replica" || req.Since != "auto" || req.CorrelationID != "corr-1" || req.RequestedBy != "chain:default-to-replica" {
		t.Errorf("request %s %+v", first.subject, req)
	}
	if first.header.Get(messages.HeaderTraceParent) != tp || first.header.Get(messages.HeaderNatsMsgID) != "chain:default-to-replica:req-1" {
		t.Errorf("headers %v", first.header)
	}
	if req, _ := messages.DecodeRequested(got[1].data); req.CorrelationID != "req-4" {
		t.Errorf("correlation id defaults to the completed request id: %q", req.CorrelationID)
	}
}

// A SyncCompleted delivered again (the service re-publishing an outcome
// after the duplicate window: same ce-id, new Nats-Msg-Id) yields no second
// request: the chained id is the same and the stream drops it.
func TestRedeliveredCompletionIsOneRequest(t *testing.T) {
	e := setup(t)
	e.router(t, chains.RouterConfig{})
	done := messages.SyncCompleted{RequestID: "req-1", Target: "default", Outputs: 2}
	e.complete(t, "default", done, tp)
	body, _ := json.Marshal(done)
	m := nats.NewMsg("pathling.sync.completed.default")
	messages.Envelope{ID: messages.CompletedID("req-1"), Type: messages.TypeCompleted, Subject: "default", Source: "pathling-sync"}.WriteTo(m.Header)
	m.Header.Set(messages.HeaderNatsMsgID, "req-1/completed#again")
	m.Data = body
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	// A later event proves both were handled before we count.
	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-2", Target: "default", Outputs: 2}, "")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) >= 2 }, "requests")
	testenv.Eventually(t, 10*time.Second, func() bool { return e.pub.calls.Load() >= 3 }, "all three completions handled")
	if ids := requestIDs(e.read(t, "pathling.sync.requested.>")); !slices.Equal(ids, []string{"chain:default-to-replica:req-1", "chain:default-to-replica:req-2"}) {
		t.Fatalf("requests %v", ids)
	}
}

// A message the chains cannot read goes to the poison subject, and the
// router goes on with the next.
func TestPoisonQueue(t *testing.T) {
	e := setup(t)
	e.router(t, chains.RouterConfig{})
	m := nats.NewMsg("pathling.sync.completed.default")
	m.Header.Set(messages.HeaderID, "broken-1/completed")
	m.Data = []byte("{this is not json")
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-1", Target: "default", Outputs: 2}, "")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.read(t, chains.PoisonSubject(messages.Subjects{}))) == 1 }, "poisoned message")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) == 1 }, "the next event handled")
	p := e.read(t, "pathling.sync.poison.chains")[0]
	if string(p.data) != "{this is not json" || p.header.Get(messages.HeaderID) != "broken-1/completed" ||
		p.header.Get("reason_poisoned") == "" || p.header.Get(chains.MetadataSubject) != "pathling.sync.completed.default" {
		t.Errorf("poisoned message %q headers %v", p.data, p.header)
	}
	if got := p.header.Get(messages.HeaderNatsMsgID); got != "broken-1/completed/poison" {
		t.Errorf("poison Nats-Msg-Id %q", got)
	}
}

// Transient publish failures are retried in the handler; beyond the
// retries the message is nacked and redelivered.
func TestTransientFailuresAreRetried(t *testing.T) {
	e := setup(t)
	e.pub.failNext.Store(6) // more than one delivery's 1 + 3 attempts
	e.router(t, chains.RouterConfig{Retry: retryFast()})
	e.complete(t, "default", messages.SyncCompleted{RequestID: "req-1", Target: "default", Outputs: 2}, "")
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) == 1 }, "request after retries")
	if n := e.pub.calls.Load(); n != 7 {
		t.Errorf("%d publish attempts, want 7 (6 failures)", n)
	}
	if n := len(e.read(t, chains.PoisonSubject(messages.Subjects{}))); n != 0 {
		t.Errorf("%d poisoned: transient failures must not be poisoned", n)
	}
}

// The consumer is durable: what completes while no replica runs chains
// when one starts again, and replicas share the work (one request per
// event).
func TestDurableAndShared(t *testing.T) {
	e := setup(t)
	stop := e.router(t, chains.RouterConfig{})
	stop()
	e.complete(t, "default", messages.SyncCompleted{RequestID: "while-down", Target: "default", Outputs: 2}, "")
	e.router(t, chains.RouterConfig{})
	e.router(t, chains.RouterConfig{})
	for i := range 10 {
		e.complete(t, "default", messages.SyncCompleted{RequestID: "req-" + string(rune('a'+i)), Target: "default", Outputs: 2}, "")
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) == 11 }, "11 requests")
	ids := requestIDs(e.read(t, "pathling.sync.requested.>"))
	if ids[0] != "chain:default-to-replica:while-down" {
		t.Errorf("first request %q", ids[0])
	}
	if n := e.pub.calls.Load(); n != 11 {
		t.Errorf("%d publishes for 11 events: replicas did not share the consumer", n)
	}
}

// A consumer created on a stream with history starts at new events.
func TestNewConsumerSkipsHistory(t *testing.T) {
	e := setup(t)
	e.complete(t, "default", messages.SyncCompleted{RequestID: "old", Target: "default", Outputs: 2}, "")
	e.router(t, chains.RouterConfig{})
	e.complete(t, "default", messages.SyncCompleted{RequestID: "new", Target: "default", Outputs: 2}, "")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.read(t, "pathling.sync.requested.>")) >= 1 }, "request")
	if ids := requestIDs(e.read(t, "pathling.sync.requested.>")); !slices.Equal(ids, []string{"chain:default-to-replica:new"}) {
		t.Fatalf("requests %v", ids)
	}
}
