package handlers_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// runEvents records a syncer's RunEvents.
type runEvents struct {
	mu  sync.Mutex
	all []handlers.RunEvent
}

func (r *runEvents) RunEvent(_ context.Context, ev handlers.RunEvent) {
	r.mu.Lock()
	r.all = append(r.all, ev)
	r.mu.Unlock()
}

func (r *runEvents) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func jsonLogger(b *testenv.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hasLog reports whether a JSON log line at level holds msg.
func hasLog(logs *testenv.Buffer, level, msg string) bool {
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"`+level+`"`) && strings.Contains(line, msg) {
			return true
		}
	}
	return false
}

// oneUninterruptedRun asserts that request id ran as one delivery with one
// kick-off and published one SyncCompleted.
func oneUninterruptedRun(t *testing.T, e *env, evs *runEvents, id string) {
	t.Helper()
	e.outcomes.of(t, id, waitLong).completedBody(t)
	if n := e.emu.Counters().JobsCreated; n != 1 {
		t.Errorf("%d Pathling jobs, want 1", n)
	}
	if n := e.pub.count(messages.CompletedID(id)); n != 1 {
		t.Errorf("SyncCompleted published %d times, want 1", n)
	}
	if n := evs.count(handlers.EventRedelivered) + evs.count(handlers.EventAdopted); n != 0 {
		t.Errorf("%d redeliveries and adoptions, want none", n)
	}
}

// pollingRun starts request r1 with the given syncer options (events and a
// JSON log added) and returns once its Pathling job has been polled twice.
func pollingRun(t *testing.T, e *env, o syncerOptions) (*runEvents, *testenv.Buffer) {
	t.Helper()
	evs, logs := &runEvents{}, &testenv.Buffer{}
	o.observer, o.log = evs, jsonLogger(logs)
	e.start(e.js, e.syncer(o), 0)
	e.request("t1", "r1", req{})
	testenv.Eventually(t, waitLong, func() bool { return evs.count(handlers.EventPolled) >= 2 }, "r1 polling")
	return evs, logs
}

// Redis loses its data (FLUSHALL) under a live run: the driver notices at
// its next write, takes the lock again, re-saves its record and finishes
// the same Pathling job, saying loudly what happened.
func TestRedisFlushUnderLiveRunTakesLockAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 40}); err != nil {
		t.Fatal(err)
	}
	evs, logs := pollingRun(t, e, syncerOptions{})

	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	oneUninterruptedRun(t, e, evs, "r1")
	if !hasLog(logs, "ERROR", "Redis lost data under a live run") {
		t.Errorf("no error log about the data loss in:\n%s", logs.String())
	}
	// The lock was the run's again, so nobody else could start an import.
	if n := evs.count(handlers.EventLockLost); n != 0 {
		t.Errorf("%d lock losses", n)
	}
}

// The same with a redis-server restarted without persistence: writes fail
// while it is down (retried within the lock's validity), then find the lock
// gone.
func TestRedisRestartWithoutPersistenceUnderLiveRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 40}); err != nil {
		t.Fatal(err)
	}
	evs, logs := pollingRun(t, e, syncerOptions{})

	e.redis.Restart()
	oneUninterruptedRun(t, e, evs, "r1")
	if !hasLog(logs, "ERROR", "Redis lost data under a live run") {
		t.Errorf("no error log about the data loss in:\n%s", logs.String())
	}
}

// Redis loses its data and another request takes the free lock before the
// live driver's next write: the driver cannot take the lock back, so it
// DELETEs its Pathling job (two imports never run on one target) and
// leaves without an outcome.
func TestRedisFlushThenAnotherRequestCancelsJob(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 5}); err != nil {
		t.Fatal(err)
	}
	gate := newGate(e.target().Pathling)
	logs := &testenv.Buffer{}
	s := e.syncer(syncerOptions{log: jsonLogger(logs)}, e.target(func(t *handlers.Target) { t.Pathling = gate }))
	ctx := context.Background()
	res := make(chan handlers.Disposition, 1)
	go func() { res <- s.Handle(ctx, e.delivery("t1", "r1", req{}, 1)) }()
	select {
	case <-gate.entered:
	case <-time.After(waitLong):
		t.Fatal("the driver never polled")
	}
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	other, err := e.store.Acquire(ctx, handlers.AcquireRequest{Target: "t1", RequestID: "other", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	select {
	case d := <-res:
		if d.Action != handlers.Leave {
			t.Fatalf("disposition %v, want leave", d.Action)
		}
	case <-time.After(waitLong):
		t.Fatal("the driver never returned")
	}
	c := e.emu.Counters()
	if c.JobsCreated != 1 || len(c.Jobs) != 1 {
		t.Fatalf("jobs created %d (%v), want 1", c.JobsCreated, c.Jobs)
	}
	for id, j := range c.Jobs {
		if j.Deletes != 1 {
			t.Errorf("job %s deleted %d times, want 1", id, j.Deletes)
		}
	}
	if n := e.pub.count(messages.CompletedID("r1")) + e.pub.count(messages.FailedID("r1")); n != 0 {
		t.Errorf("%d outcomes published", n)
	}
	if info, held, err := e.store.Lock(ctx, "t1"); err != nil || !held || info.RequestID != "other" || info.Token != other.Token {
		t.Errorf("lock = %+v held=%v err=%v, want other's", info, held, err)
	}
	if !hasLog(logs, "ERROR", "cancelling this run's Pathling job") {
		t.Errorf("no error log about the cancelled job in:\n%s", logs.String())
	}
}

// A Redis that stops answering for two seconds (SIGSTOP) under a run whose
// lock lives six: the writes that fail meanwhile are retried within the
// lock's validity, and the run ends with one kick-off, one outcome and no
// redelivery.
func TestRedisPauseWithinLockValidityKeepsRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 60}); err != nil {
		t.Fatal(err)
	}
	// Short client timeouts, so the pause shows as failed writes rather
	// than slow ones.
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	store := redisstore.New(rdb, redisstore.WithPrefix("test:"))

	evs, logs := pollingRun(t, e, syncerOptions{lockTTL: 6 * time.Second, store: store})

	e.redis.Pause()
	time.Sleep(2 * time.Second) // the blip's length: fault injection, not a wait for a result
	e.redis.Resume()

	oneUninterruptedRun(t, e, evs, "r1")
	if !hasLog(logs, "WARN", "store write failed; retrying") {
		t.Errorf("no write met the pause (no retry logged):\n%s", logs.String())
	}
}

// flushBeforeTerminalSave empties Redis once, just before the first write
// of a terminal run record: the data loss at the worst moment, after the
// job's DELETE and before the outcome's record.
type flushBeforeTerminalSave struct {
	*redisstore.Store
	rdb  *redis.Client
	once sync.Once
}

func (f *flushBeforeTerminalSave) flush(ctx context.Context) {
	f.once.Do(func() {
		if err := f.rdb.FlushAll(ctx).Err(); err != nil {
			panic(err)
		}
	})
}

func (f *flushBeforeTerminalSave) SaveRun(ctx context.Context, l handlers.Lease, r *handlers.Run) error {
	if r.State.Terminal() {
		f.flush(ctx)
	}
	return f.Store.SaveRun(ctx, l, r)
}

func (f *flushBeforeTerminalSave) Finish(ctx context.Context, l handlers.Lease, fin *handlers.Finish) error {
	f.flush(ctx)
	return f.Store.Finish(ctx, l, fin)
}

// Redis loses its data as the run records its outcome: the driver takes the
// lock again, records the outcome, DELETEs the job once and publishes once.
func TestRedisFlushBeforeOutcomeRecordedStillFinishes(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 2}); err != nil {
		t.Fatal(err)
	}
	evs, logs := &runEvents{}, &testenv.Buffer{}
	runs := &flushBeforeTerminalSave{Store: e.store, rdb: e.rdb}
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{e.target()}, Subjects: e.subjects, LockTTL: 3 * time.Second,
		StoreRetry: 50 * time.Millisecond, Observer: evs, Logger: jsonLogger(logs),
	}, handlers.Ports{Locker: e.store, Recovery: e.store, Runs: runs, Watermarks: e.store, Publisher: e.pub})
	if err != nil {
		t.Fatal(err)
	}
	e.start(e.js, s, 0)
	e.request("t1", "r1", req{})
	oneUninterruptedRun(t, e, evs, "r1")
	for id, j := range e.emu.Counters().Jobs {
		if j.Deletes != 1 {
			t.Errorf("job %s deleted %d times, want 1", id, j.Deletes)
		}
	}
	run, err := e.store.LoadRun(context.Background(), "t1", "r1")
	if err != nil || run.State != handlers.RunCompleted {
		t.Fatalf("record after the run: %+v, %v", run, err)
	}
	if _, held, _ := e.store.Lock(context.Background(), "t1"); held {
		t.Error("the target is still locked")
	}
	if !hasLog(logs, "ERROR", "Redis lost data under a live run") {
		t.Errorf("no error log about the data loss in:\n%s", logs.String())
	}
}
