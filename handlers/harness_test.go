package handlers_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/emulators/source"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// env is one test's world: a real JetStream server, a real redis-server,
// the Pathling emulator and (in pull mode) the bulk-data source emulator.
type env struct {
	t        testing.TB
	natsURL  string
	nc       *nats.Conn
	js       jetstream.JetStream
	redis    *testenv.RedisServer
	rdb      *redis.Client
	store    *redisstore.Store
	emu      *pathlingemu.Emulator
	emuMu    sync.Mutex // guards emuSrv (pathlingDown may run in a driver's observer)
	emuSrv   *httptest.Server
	emuURL   string // Pathling FHIR base
	src      *source.Server
	srcURL   string // source FHIR base
	subjects messages.Subjects
	outcomes *outcomeLog
	pub      *countingPublisher
}

type envOptions struct {
	pull      bool // Pathling emulator really pulls from a source emulator
	patients  int
	clockSkew time.Duration // Pathling's clock minus the real one
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, subjects: messages.Subjects{Prefix: messages.DefaultSubjectPrefix}}
	ns := testenv.NATS(t)
	e.natsURL = ns.ClientURL()
	e.nc = connect(t, e.natsURL)
	var err error
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := natsbus.EnsureStream(ctx, e.js, natsbus.StreamConfig{
		Name: "PATHLING_SYNC", Subjects: []string{e.subjects.All()}, MaxAge: time.Hour,
		Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	e.redis = testenv.StartRedis(t)
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.rdb = redis.NewClient(opt)
	t.Cleanup(func() { e.rdb.Close() })
	e.store = redisstore.New(e.rdb, redisstore.WithPrefix("test:"))

	if o.pull {
		patients := o.patients
		if patients == 0 {
			patients = 5
		}
		e.src, err = source.New(source.Config{Seed: 7, Patients: patients})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.src.Close)
		srv := httptest.NewServer(e.src)
		t.Cleanup(srv.Close)
		e.srcURL = srv.URL + "/fhir"
	}
	mode := pathlingemu.ModeScripted
	allowed := []string{"http://source.test/fhir"}
	if o.pull {
		mode = pathlingemu.ModePull
		allowed = []string{e.srcURL}
	}
	e.emu, err = pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: allowed, AllowInsecureURLs: true, AllowInternalURLs: true,
		Mode: mode, PollInterval: 20 * time.Millisecond, ClockSkew: o.clockSkew,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.emu.Close)
	e.emuSrv = httptest.NewServer(e.emu)
	t.Cleanup(func() {
		e.emuMu.Lock()
		defer e.emuMu.Unlock()
		e.emuSrv.Close()
	})
	e.emuURL = e.emuSrv.URL + "/fhir"

	p, err := natsbus.NewPublisher(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.pub = &countingPublisher{Publisher: p}
	e.outcomes = followOutcomes(t, e.js, e.subjects)
	return e
}

// pathlingDown closes Pathling's listener and connections: every request
// then meets "connection refused" until pathlingUp.
func (e *env) pathlingDown() {
	e.emuMu.Lock()
	defer e.emuMu.Unlock()
	e.emuSrv.Close()
}

// pathlingUp serves Pathling again on the same address, jobs intact.
func (e *env) pathlingUp() {
	e.t.Helper()
	e.emuMu.Lock()
	defer e.emuMu.Unlock()
	ln, err := net.Listen("tcp", e.emuSrv.Listener.Addr().String())
	if err != nil {
		e.t.Fatalf("listen again on Pathling's address: %v", err)
	}
	srv := httptest.NewUnstartedServer(e.emu)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	e.emuSrv = srv
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// exportURL is the source URL requests name.
func (e *env) exportURL() string {
	if e.srcURL != "" {
		return e.srcURL
	}
	return "http://source.test/fhir"
}

// target returns a target named "t1" on the emulator with fast test cadences.
func (e *env) target(mod ...func(*handlers.Target)) handlers.Target {
	e.t.Helper()
	c, err := pathling.New(e.emuURL)
	if err != nil {
		e.t.Fatal(err)
	}
	t := handlers.Target{
		Name:     "t1",
		Pathling: pathling.NewPort(c),
		Defaults: messages.SyncRequested{ExportURL: e.exportURL(), SaveMode: "merge"},
		Timeout:  time.Minute,
		Overlap:  2 * time.Minute,
		Poll:     handlers.Backoff{Initial: 10 * time.Millisecond, Factor: 1.5, Max: 50 * time.Millisecond},
		Retry:    handlers.Backoff{Initial: 20 * time.Millisecond, Factor: 2, Max: 100 * time.Millisecond},
	}
	for _, m := range mod {
		m(&t)
	}
	return t
}

type syncerOptions struct {
	lockTTL  time.Duration
	observer handlers.Observer
	driver   string
	clock    clock.Clock       // the service's clock; nil: the system's
	store    *redisstore.Store // default e.store
	log      *slog.Logger
	// queueRetry is Config.QueueRetry (default 30 ms); releases is
	// Ports.Releases (default none) and queueWaiters its wait room's
	// bounds (0: the defaults).
	queueRetry            time.Duration
	releases              handlers.Releases
	queueWaiters          int
	queueWaitersPerTarget int
	// precedence is Ports.Precedence (default none: every new queued
	// request settles first).
	precedence handlers.Precedence
	// tp is Config.TracerProvider (default none: no-op spans).
	tp trace.TracerProvider
}

func (e *env) syncer(o syncerOptions, targets ...handlers.Target) *handlers.Syncer {
	e.t.Helper()
	if len(targets) == 0 {
		targets = []handlers.Target{e.target()}
	}
	if o.lockTTL == 0 {
		o.lockTTL = 3 * time.Second
	}
	if o.store == nil {
		o.store = e.store
	}
	if o.queueRetry == 0 {
		o.queueRetry = 30 * time.Millisecond
	}
	ports := e.ports(o.store)
	ports.Jobs = o.store
	ports.Releases = o.releases
	ports.Precedence = o.precedence
	s, err := handlers.New(handlers.Config{
		Targets: targets, Subjects: e.subjects, LockTTL: o.lockTTL,
		QueueRetry: o.queueRetry, StoreRetry: 50 * time.Millisecond,
		QueueWaiters: o.queueWaiters, QueueWaitersPerTarget: o.queueWaitersPerTarget,
		Driver: o.driver, Observer: o.observer, Clock: o.clock, Logger: o.log,
		TracerProvider: o.tp,
	}, ports)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// ports are a Syncer's ports on store and the env's publisher, without the
// job registry (Ports.Jobs), which e.syncer adds.
func (e *env) ports(store *redisstore.Store) handlers.Ports {
	return handlers.Ports{Locker: store, Recovery: store, Runs: store, Watermarks: store, Publisher: e.pub}
}

// instance is one running replica: a consumer driving a Syncer.
type instance struct {
	cancel context.CancelFunc
	done   chan error
	cons   *natsbus.Consumer

	stopOnce sync.Once
}

func (e *env) start(js jetstream.JetStream, s *handlers.Syncer, ackWait time.Duration) *instance {
	e.t.Helper()
	if ackWait == 0 {
		ackWait = 2 * time.Second
	}
	cons, err := natsbus.NewConsumer(js, natsbus.ConsumerConfig{
		Stream: "PATHLING_SYNC", Durable: "pathling-sync", FilterSubject: e.subjects.RequestedFilter(),
		AckWait: ackWait, MaxWorkers: 256, FetchWait: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second,
	}, s.Handle)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), cons: cons}
	go func() { in.done <- cons.Run(ctx) }()
	e.t.Cleanup(in.stop)
	testenv.Eventually(e.t, 10*time.Second, cons.Bound, "consumer bound")
	return in
}

// stop cancels the replica and waits for its consumer to return; again, it
// returns at once.
func (in *instance) stop() {
	in.stopOnce.Do(func() {
		in.cancel()
		select {
		case <-in.done:
		case <-time.After(15 * time.Second):
		}
	})
}

// request publishes a SyncRequested with a CloudEvents envelope.
func (e *env) request(target, id string, body any) {
	e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	env := messages.Envelope{ID: id, Source: "test", Type: messages.TypeRequested, Subject: target,
		ContentType: messages.ContentTypeJSON, Time: time.Now().UTC()}
	if _, err := natsbus.PublishRequest(context.Background(), e.js, e.subjects.Requested(target), env, b); err != nil {
		e.t.Fatalf("publish request %s: %v", id, err)
	}
}

// delivery builds a Delivery as the consumer would, for direct Handle calls.
func (e *env) delivery(target, id string, body any, n uint64) handlers.Delivery {
	b, _ := json.Marshal(body)
	h := nats.Header{}
	messages.Envelope{ID: id, Source: "test", Type: messages.TypeRequested, Subject: target,
		ContentType: messages.ContentTypeJSON, Time: time.Now().UTC()}.WriteTo(h)
	return handlers.Delivery{Subject: e.subjects.Requested(target), Header: h, Data: b,
		Stream: "PATHLING_SYNC", StreamSeq: n, NumDelivered: n, Published: time.Now()}
}

// outcome is one SyncCompleted or SyncFailed seen on the stream.
type outcome struct {
	Subject string
	Header  nats.Header
	Body    []byte
	Seq     uint64
}

func (o outcome) failed() bool { return strings.Contains(o.Subject, ".failed.") }

func (o outcome) completedBody(t *testing.T) messages.SyncCompleted {
	t.Helper()
	var c messages.SyncCompleted
	if o.failed() {
		t.Fatalf("want SyncCompleted, got SyncFailed %s", o.Body)
	}
	if err := json.Unmarshal(o.Body, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (o outcome) failedBody(t *testing.T) messages.SyncFailed {
	t.Helper()
	var f messages.SyncFailed
	if !o.failed() {
		t.Fatalf("want SyncFailed, got SyncCompleted %s", o.Body)
	}
	if err := json.Unmarshal(o.Body, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

type outcomeLog struct {
	mu  sync.Mutex
	all []outcome
}

func followOutcomes(t testing.TB, js jetstream.JetStream, subj messages.Subjects) *outcomeLog {
	t.Helper()
	l := &outcomeLog{}
	features, err := natsbus.Features(js.Conn())
	if err != nil {
		t.Fatal(err)
	}
	flt := features.Filter(subj.Prefix+".completed.>", subj.Prefix+".failed.>")
	cons, err := js.OrderedConsumer(context.Background(), "PATHLING_SYNC", jetstream.OrderedConsumerConfig{
		FilterSubjects: flt.Subjects,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if !flt.Matches(m.Subject()) {
			return
		}
		md, _ := m.Metadata()
		var seq uint64
		if md != nil {
			seq = md.Sequence.Stream
		}
		l.mu.Lock()
		l.all = append(l.all, outcome{Subject: m.Subject(), Header: m.Headers(), Body: m.Data(), Seq: seq})
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return l
}

func (l *outcomeLog) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.all...)
}

// wait returns the outcomes once there are at least n.
func (l *outcomeLog) wait(t *testing.T, n int, timeout time.Duration) []outcome {
	t.Helper()
	testenv.Eventually(t, timeout, func() bool { return len(l.snapshot()) >= n }, "%d outcomes (have %d)", n, len(l.snapshot()))
	return l.snapshot()
}

// of returns the outcome for a request id, waiting for it.
func (l *outcomeLog) of(t *testing.T, requestID string, timeout time.Duration) outcome {
	t.Helper()
	var found outcome
	testenv.Eventually(t, timeout, func() bool {
		for _, o := range l.snapshot() {
			id := o.Header.Get(messages.HeaderID)
			if id == messages.CompletedID(requestID) || id == messages.FailedID(requestID) {
				found = o
				return true
			}
		}
		return false
	}, "outcome of %s", requestID)
	return found
}

// countingPublisher counts Publish calls per event id (a real publisher underneath).
type countingPublisher struct {
	*natsbus.Publisher
	mu     sync.Mutex
	calls  map[string]int
	before func(handlers.Event) // called before each publish, when set
}

func (p *countingPublisher) Publish(ctx context.Context, ev handlers.Event) error {
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[string]int{}
	}
	p.calls[ev.Envelope.ID]++
	before := p.before
	p.mu.Unlock()
	if before != nil {
		before(ev)
	}
	return p.Publisher.Publish(ctx, ev)
}

func (p *countingPublisher) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

// observerFunc adapts a func to handlers.Observer.
type observerFunc func(context.Context, handlers.RunEvent)

func (f observerFunc) RunEvent(ctx context.Context, ev handlers.RunEvent) { f(ctx, ev) }

// gatedPathling blocks the first Status call until released: a driver
// "paused" (GC, VM freeze) in the middle of a poll.
type gatedPathling struct {
	handlers.Pathling
	once    sync.Once
	entered chan struct{}
	release chan struct{}
	armed   atomic.Bool
}

func newGate(p handlers.Pathling) *gatedPathling {
	g := &gatedPathling{Pathling: p, entered: make(chan struct{}), release: make(chan struct{})}
	g.armed.Store(true)
	return g
}

func (g *gatedPathling) Status(ctx context.Context, url string) (handlers.JobStatus, error) {
	if g.armed.Load() {
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.entered)
			<-g.release
		}
	}
	return g.Pathling.Status(ctx, url)
}

// sameResources asserts that Pathling's store holds exactly the source's
// resources, type by type.
func sameResources(t *testing.T, e *env) {
	t.Helper()
	for _, typ := range []string{"Patient", "Encounter", "Observation", "Condition"} {
		want := e.src.Resources(typ)
		got := e.emu.Resources(typ)
		if len(want) == 0 {
			t.Fatalf("source has no %s", typ)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: Pathling has %d, source has %d", typ, len(got), len(want))
		}
		for id, w := range want {
			g, ok := got[id]
			if !ok {
				t.Fatalf("%s/%s missing in Pathling", typ, id)
			}
			if !jsonEqual(g, w) {
				t.Fatalf("%s/%s differs:\n pathling %s\n source   %s", typ, id, g, w)
			}
		}
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
