package handlers_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// A sync whose job is done at the first poll costs at most 4 Redis round
// trips: take the lock, read what the run starts from and write the record
// the kick-off needs; the job and the polling record; the watermark with the
// terminal record; after the job's DELETE, the release. With since "auto"
// too: its since is resolved in the first.
func TestFastSyncRedisRoundTrips(t *testing.T) {
	e, s, rt := countedSyncer(t, pathlingemu.Script{Polls: 0})
	ctx := context.Background()
	for i, c := range []struct {
		id   string
		body req
		max  int64
	}{
		{"full", req{}, 4},
		{"auto", req{"since": "auto"}, 4},
	} {
		// Warm up the script cache (an EVALSHA miss costs a second round
		// trip once per script, not per sync).
		warm := e.delivery("t1", "warm-up-"+c.id, c.body, uint64(100+i))
		if got := s.Handle(ctx, warm); got.Action != handlers.Ack {
			t.Fatalf("warm-up: %v", got.Action)
		}
		before := rt.Load()
		if got := s.Handle(ctx, e.delivery("t1", c.id, c.body, uint64(i+1))); got.Action != handlers.Ack {
			t.Fatalf("%s: %v", c.id, got.Action)
		}
		n := rt.Load() - before
		e.outcomes.of(t, c.id, waitLong).completedBody(t)
		// Exactly: the counter sees every round trip (one fewer would be a
		// step it misses, or a sync cheaper than this test knows).
		if n != c.max {
			t.Errorf("%s: %d Redis round trips for one fast sync, want %d", c.id, n, c.max)
		}
		t.Logf("%s: %d round trips", c.id, n)
	}
}

// A forbid request meeting a busy target is answered in at most 2 round
// trips: the lock attempt (which also tells a finished request) and the
// refusal's record.
func TestConflictRedisRoundTrips(t *testing.T) {
	e, s, rt := countedSyncer(t, pathlingemu.Script{})
	ctx := context.Background()
	if _, err := e.store.Acquire(ctx, handlers.AcquireRequest{Target: "t1", RequestID: "holder", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// Warm up the script cache with a first conflict.
	if got := s.Handle(ctx, e.delivery("t1", "warm-up", req{}, 1)); got.Action != handlers.Ack {
		t.Fatalf("warm-up: %v", got.Action)
	}
	before := rt.Load()
	if got := s.Handle(ctx, e.delivery("t1", "busy", req{}, 2)); got.Action != handlers.Ack {
		t.Fatalf("conflict: %v", got.Action)
	}
	n := rt.Load() - before
	if f := e.outcomes.of(t, "busy", waitLong).failedBody(t); f.Reason != messages.ReasonConflict {
		t.Fatalf("%+v", f)
	}
	if n > 2 {
		t.Errorf("%d Redis round trips for one conflict answer, want at most 2", n)
	}
	t.Logf("conflict: %d round trips", n)
}

// A forbid request for a target whose lock a run of this same replica holds
// is refused in one round trip, the refusal's record (the store would only
// say "held"), and that record is what a redelivery sends again. Once the run
// stopped here (its lock still held in the store: shutdown keeps it for the
// adopter), the store is asked again.
func TestConflictWithRunHeldHereRedisRoundTrips(t *testing.T) {
	e, _, rt := countedSyncer(t, pathlingemu.Script{Polls: 100000})
	// The holder polls once a minute: its polls' lease renewals must not
	// fall in the window counted (every 50 ms, they made this test fail 4
	// times in 10).
	s := e.syncer(syncerOptions{lockTTL: time.Minute}, e.target(func(t *handlers.Target) {
		t.Poll = handlers.Backoff{Initial: time.Minute, Factor: 1, Max: time.Minute}
	}))
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	ran := make(chan handlers.Disposition, 1)
	go func() { ran <- s.Handle(runCtx, e.delivery("t1", "holder", req{}, 1)) }()
	ctx := context.Background()
	// Until the kick-off is recorded, the holder's own round trips would
	// fall in the window counted.
	testenv.Eventually(t, waitLong, func() bool {
		r, err := e.store.LoadRun(ctx, "t1", "holder")
		return err == nil && r.State == handlers.RunPolling
	}, "the holder's kick-off recorded")

	// Warm up the script cache with a first conflict.
	if got := s.Handle(ctx, e.delivery("t1", "warm-up", req{}, 2)); got.Action != handlers.Ack {
		t.Fatalf("warm-up: %v", got.Action)
	}
	base := rt.Load()
	if got := s.Handle(ctx, e.delivery("t1", "busy", req{}, 3)); got.Action != handlers.Ack {
		t.Fatalf("conflict: %v", got.Action)
	}
	if n := rt.Load() - base; n != 1 {
		t.Errorf("%d Redis round trips for a conflict with a run held here, want 1", n)
	}
	f := e.outcomes.of(t, "busy", waitLong).failedBody(t)
	if f.Reason != messages.ReasonConflict || f.RunningRequestID != "holder" {
		t.Fatalf("%+v", f)
	}
	if r, err := e.store.LoadRun(ctx, "t1", "busy"); err != nil || !r.State.Terminal() || r.Outcome == nil {
		t.Fatalf("refusal's record: %+v, %v", r, err)
	}
	// A redelivery re-publishes the recorded refusal (the same event id: one outcome).
	redelivered := e.delivery("t1", "busy", req{}, 3)
	redelivered.NumDelivered = 2
	if got := s.Handle(ctx, redelivered); got.Action != handlers.Ack {
		t.Fatalf("redelivery: %v", got.Action)
	}

	stopRun()
	if got := <-ran; got.Action != handlers.Nak {
		t.Fatalf("holder after shutdown: %v, want Nak", got.Action)
	}
	base = rt.Load()
	if got := s.Handle(ctx, e.delivery("t1", "busy-2", req{}, 4)); got.Action != handlers.Ack {
		t.Fatalf("conflict after the run stopped here: %v", got.Action)
	}
	if n := rt.Load() - base; n != 2 {
		t.Errorf("%d Redis round trips for a conflict once no run is held here, want 2 (the store is asked)", n)
	}
	if f := e.outcomes.of(t, "busy-2", waitLong).failedBody(t); f.Reason != messages.ReasonConflict || f.RunningRequestID != "holder" {
		t.Fatalf("%+v", f)
	}
	if got := len(e.outcomes.snapshot()); got != 3 {
		t.Errorf("%d outcomes on the stream, want 3 (warm-up, busy once, busy-2)", got)
	}
}

// A watermark changed under a running sync by someone other than its lease
// (an operator's reset, here a raw write) is seen by the finish, which
// decides again on it: the run never moves it backwards, and its outcome
// reports what is stored.
func TestWatermarkChangedDuringRunIsDecidedAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1}); err != nil {
		t.Fatal(err)
	}
	key := handlers.WatermarkKey(handlers.ImportParams{ExportURL: e.exportURL()})
	later := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	var once atomic.Bool
	obs := observerFunc(func(ctx context.Context, ev handlers.RunEvent) {
		if ev.Kind == handlers.EventPolled && once.CompareAndSwap(false, true) {
			if err := e.rdb.HSet(ctx, "test:{t1}:wm", key, later.UnixMilli()).Err(); err != nil {
				t.Error(err)
			}
		}
	})
	logs := &testenv.Buffer{}
	s := e.syncer(syncerOptions{lockTTL: time.Minute, observer: obs, log: jsonLogger(logs)})
	if got := s.Handle(context.Background(), e.delivery("t1", "full", req{}, 1)); got.Action != handlers.Ack {
		t.Fatalf("%v", got.Action)
	}
	c := e.outcomes.of(t, "full", waitLong).completedBody(t)
	if c.Watermark != messages.FormatInstant(later) {
		t.Errorf("outcome's watermark %q, want the stored %q", c.Watermark, messages.FormatInstant(later))
	}
	if got, ok, _ := e.store.Watermark(context.Background(), "t1", key); !ok || !got.Equal(later) {
		t.Errorf("stored watermark %v, want %v", got, later)
	}
	if !hasLog(logs, "WARN", "the stored watermark changed during the run") {
		t.Errorf("the finish did not meet the change:\n%s", logs.String())
	}
}

// refuseFirstTerminalWrite fails the first terminal write of a run's end as
// a store that lost the lock would: the driver leaves the run to its next
// delivery.
type refuseFirstTerminalWrite struct {
	*redisstore.Store
	once atomic.Bool
}

func (f *refuseFirstTerminalWrite) Finish(ctx context.Context, l handlers.Lease, fin *handlers.Finish) error {
	if fin.Run != nil && f.once.CompareAndSwap(false, true) {
		return handlers.ErrLockLost
	}
	return f.Store.Finish(ctx, l, fin)
}

// The job is DELETEd only once the terminal record is written: a run whose
// terminal write fails leaves its job for the next delivery, which adopts
// it from the polling record rather than importing again.
func TestJobOutlivesAFailedTerminalWrite(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 0}); err != nil {
		t.Fatal(err)
	}
	ports := e.ports(e.store)
	ports.Jobs = e.store
	ports.Runs = &refuseFirstTerminalWrite{Store: e.store}
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{e.target()}, Subjects: e.subjects, LockTTL: time.Minute,
		StoreRetry: 50 * time.Millisecond,
	}, ports)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := e.delivery("t1", "r1", req{}, 1)
	if got := s.Handle(ctx, d); got.Action != handlers.Leave {
		t.Fatalf("first delivery: %v, want leave", got.Action)
	}
	d.NumDelivered = 2
	if got := s.Handle(ctx, d); got.Action != handlers.Ack {
		t.Fatalf("redelivery: %v", got.Action)
	}
	e.outcomes.of(t, "r1", waitLong).completedBody(t)
	if c := e.emu.Counters(); c.JobsCreated != 1 {
		t.Errorf("%d jobs created, want 1: the first was deleted before its run's end was recorded", c.JobsCreated)
	}
}

// Polls that see a running job with nothing new (no X-Progress, the same
// expected end) write no record, only renew the lease, and the outcome still
// counts every poll.
// Adoption needs only what the kick-off's write stored (the state and the
// job's status URL: TestCrashedInstanceRunIsAdopted).
func TestRunningPollsWriteNothingNew(t *testing.T) {
	e, s, rt := countedSyncer(t, pathlingemu.Script{Polls: 5, ExportPolls: 5})
	ctx := context.Background()
	if got := s.Handle(ctx, e.delivery("t1", "warm-up", req{}, 100)); got.Action != handlers.Ack {
		t.Fatalf("warm-up: %v", got.Action)
	}
	base := rt.Load()
	if got := s.Handle(ctx, e.delivery("t1", "slow", req{}, 1)); got.Action != handlers.Ack {
		t.Fatalf("slow: %v", got.Action)
	}
	n := rt.Load() - base
	if polls := e.outcomes.of(t, "slow", waitLong).completedBody(t).Polls; polls != 6 {
		t.Errorf("outcome counts %d polls, want 6", polls)
	}
	// The fast sync's 4, and one lease renewal per poll that saw the job
	// running: a renewal, not a record write, is what tells a lock that
	// vanished under a running job (the redis-restart-no-persistence fault).
	if n > 4+5 {
		t.Errorf("%d Redis round trips for a sync polled 5 times while running, want at most 9", n)
	}
}

// countedSyncer is a syncer (lock TTL 1 min) on a new env whose Pathling
// jobs follow script, and the service's own Redis round-trip counter
// (pathling_sync_redis_round_trips_total) on its client.
func countedSyncer(t *testing.T, script pathlingemu.Script) (*env, *handlers.Syncer, *redisstore.RoundTrips) {
	t.Helper()
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(script); err != nil {
		t.Fatal(err)
	}
	rt := &redisstore.RoundTrips{}
	e.rdb.AddHook(rt)
	return e, e.syncer(syncerOptions{lockTTL: time.Minute}), rt
}
