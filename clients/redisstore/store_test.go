package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

const testPrefix = "ps-test:"

// newStore starts a fresh redis-server and returns a store on it plus a raw
// client for looking at the keys.
func newStore(t testing.TB, opts ...redisstore.Option) (*redisstore.Store, *redis.Client) {
	t.Helper()
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return redisstore.New(c, append([]redisstore.Option{redisstore.WithPrefix(testPrefix)}, opts...)...), c
}

func acquire(t *testing.T, s *redisstore.Store, target, request string, ttl time.Duration) handlers.Lease {
	t.Helper()
	l, err := s.Acquire(context.Background(), handlers.AcquireRequest{Target: target, RequestID: request, TTL: ttl})
	if err != nil {
		t.Fatalf("acquire %s/%s: %v", target, request, err)
	}
	return l
}

func wantHeldBy(t *testing.T, err error, holder string) {
	t.Helper()
	var held *handlers.LockHeldError
	if !errors.As(err, &held) {
		t.Fatalf("err = %v, want *LockHeldError", err)
	}
	if held.RequestID != holder {
		t.Fatalf("held by %q, want %q", held.RequestID, holder)
	}
}

func newRun(l handlers.Lease, state handlers.RunState) *handlers.Run {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &handlers.Run{
		RunID:     "run-" + l.RequestID,
		RequestID: l.RequestID,
		Target:    l.Target,
		State:     state,
		Params:    handlers.ImportParams{ExportURL: "https://source.example/fhir", SaveMode: "merge", Types: []string{"Patient"}},
		StatusURL: "https://pathling.example/fhir/$job?id=1",
		StartedAt: now,
		UpdatedAt: now,
		Deadline:  now.Add(2 * time.Hour),
	}
}

func TestAcquireRenewRelease(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)

	l := acquire(t, s, "tgt", "req-1", time.Minute)
	if l.Target != "tgt" || l.RequestID != "req-1" || l.Token < 1 {
		t.Fatalf("lease = %+v", l)
	}
	info, ok, err := s.Lock(ctx, "tgt")
	if err != nil || !ok || info.RequestID != "req-1" || info.Token != l.Token || info.TTL <= 0 || info.TTL > time.Minute {
		t.Fatalf("Lock = %+v, %v, %v", info, ok, err)
	}

	_, err = s.Acquire(ctx, handlers.AcquireRequest{Target: "tgt", RequestID: "req-2", TTL: time.Minute})
	wantHeldBy(t, err, "req-1")

	// Another target is independent.
	acquire(t, s, "other", "req-2", time.Minute)

	if err := s.Renew(ctx, l, time.Hour); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if ttl := c.PTTL(ctx, testPrefix+"{tgt}:lock").Val(); ttl <= time.Minute {
		t.Fatalf("ttl after renew = %s, want about 1h", ttl)
	}

	// A forged lease with the right request but the wrong token holds nothing.
	forged := l
	forged.Token++
	if err := s.Renew(ctx, forged, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("renew with wrong token: %v", err)
	}
	if err := s.Release(ctx, forged); err != nil {
		t.Fatalf("release with wrong token: %v", err)
	}
	if _, ok, _ := s.Lock(ctx, "tgt"); !ok {
		t.Fatal("release with a wrong token freed the lock")
	}

	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, ok, _ := s.Lock(ctx, "tgt"); ok {
		t.Fatal("lock still held after release")
	}
	if err := s.Renew(ctx, l, time.Minute); !errors.Is(err, handlers.ErrLockVanished) {
		t.Fatalf("renew after release: %v, want ErrLockVanished", err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("second release: %v", err)
	}

	l2 := acquire(t, s, "tgt", "req-2", time.Minute)
	if l2.Token <= l.Token {
		t.Fatalf("token %d after %d: not increasing", l2.Token, l.Token)
	}
}

func TestAcquireInvalid(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	for name, req := range map[string]handlers.AcquireRequest{
		"empty target":  {RequestID: "r", TTL: time.Second},
		"brace target":  {Target: "a{b}", RequestID: "r", TTL: time.Second},
		"empty request": {Target: "t", TTL: time.Second},
		"zero ttl":      {Target: "t", RequestID: "r"},
		"sub-ms ttl":    {Target: "t", RequestID: "r", TTL: time.Microsecond},
	} {
		if _, err := s.Acquire(ctx, req); !errors.Is(err, redisstore.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestTakeoverBySameRequestFencesOldLease(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)

	old := acquire(t, s, "tgt", "req-1", time.Minute)
	if err := s.SaveRun(ctx, old, newRun(old, handlers.RunPolling)); err != nil {
		t.Fatalf("save under old lease: %v", err)
	}

	// A redelivery of the same request takes the run over.
	cur := acquire(t, s, "tgt", "req-1", time.Minute)
	if cur.Token <= old.Token {
		t.Fatalf("takeover token %d not above %d", cur.Token, old.Token)
	}

	if err := s.Renew(ctx, old, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("old renew: %v", err)
	}
	if err := s.SaveRun(ctx, old, newRun(old, handlers.RunFailed)); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("old save: %v", err)
	}
	if err := s.CommitWatermark(ctx, old, "wm", time.Now()); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("old commit: %v", err)
	}
	// Release by the old lease must not free the new holder's lock.
	if err := s.Release(ctx, old); err != nil {
		t.Fatalf("old release: %v", err)
	}
	if info, ok, _ := s.Lock(ctx, "tgt"); !ok || info.Token != cur.Token {
		t.Fatalf("lock after stale release = %+v, %v", info, ok)
	}

	r := newRun(cur, handlers.RunPolling)
	r.Polls = 7
	if err := s.SaveRun(ctx, cur, r); err != nil {
		t.Fatalf("save under new lease: %v", err)
	}
	if r.Token != cur.Token {
		t.Fatalf("saved run token %d, want %d", r.Token, cur.Token)
	}
	got, err := s.LoadRun(ctx, "tgt", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != handlers.RunPolling || got.Polls != 7 || got.Token != cur.Token {
		t.Fatalf("loaded %+v", got)
	}
	if err := s.CommitWatermark(ctx, cur, "wm", time.Now()); err != nil {
		t.Fatalf("new commit: %v", err)
	}
}

// The paused-process case: a driver stops (GC, VM pause) past its lock's
// TTL, another request takes the target, and the woken driver's writes must
// all be refused.
func TestExpiredLeaseIsFenced(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)

	stale := acquire(t, s, "tgt", "req-1", 200*time.Millisecond)
	if err := s.SaveRun(ctx, stale, newRun(stale, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}

	var next handlers.Lease
	testenv.Eventually(t, 5*time.Second, func() bool {
		l, err := s.Acquire(ctx, handlers.AcquireRequest{Target: "tgt", RequestID: "req-2", TTL: time.Minute})
		if err != nil {
			wantHeldBy(t, err, "req-1")
			return false
		}
		next = l
		return true
	}, "lock of req-1 never expired")
	if next.Token <= stale.Token {
		t.Fatalf("token %d not above %d", next.Token, stale.Token)
	}

	if err := s.Renew(ctx, stale, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("stale renew: %v", err)
	}
	if err := s.SaveRun(ctx, stale, newRun(stale, handlers.RunCompleted)); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("stale save: %v", err)
	}
	if err := s.CommitWatermark(ctx, stale, "wm", time.Now()); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("stale commit: %v", err)
	}
	if _, ok, _ := s.Watermark(ctx, "tgt", "wm"); ok {
		t.Fatal("stale commit wrote a watermark")
	}
	got, err := s.LoadRun(ctx, "tgt", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != handlers.RunPolling {
		t.Fatalf("stale save changed the record to %s", got.State)
	}
}

// Even if a stale driver's token happens to hold the lock again (say the
// fence counter was reset), a record written by a later token wins.
func TestSaveRunRefusesOlderTokenThanRecord(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	l := acquire(t, s, "tgt", "req-1", time.Minute)
	if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, testPrefix+"{tgt}:run:req-1", "token", l.Token+10).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("save over a later token: %v", err)
	}
}

func TestSaveRunChecksOwnership(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	l := acquire(t, s, "tgt", "req-1", time.Minute)
	other := newRun(handlers.Lease{Target: "tgt", RequestID: "req-2"}, handlers.RunPolling)
	if err := s.SaveRun(ctx, l, other); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Fatalf("save of another request's run: %v", err)
	}
	if err := s.SaveRun(ctx, l, nil); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Fatalf("save nil: %v", err)
	}
}

func TestLoadRunNotFound(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.LoadRun(context.Background(), "tgt", "nope"); !errors.Is(err, handlers.ErrRunNotFound) {
		t.Fatalf("err = %v, want ErrRunNotFound", err)
	}
}

func TestRunRecordRoundTripAndRetention(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t, redisstore.WithRetention(time.Hour))
	l := acquire(t, s, "tgt", "req:1/a", time.Minute) // ids may carry ':' and '/'
	key := testPrefix + "{tgt}:run:req:1/a"

	r := newRun(l, handlers.RunPolling)
	since := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r.Params.Since = &since
	r.Attempts = 2
	if err := s.SaveRun(ctx, l, r); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("non-terminal ttl = %s, want about the 1h retention", ttl)
	}

	r.State = handlers.RunCompleted
	r.FinishedAt = time.Now().UTC().Truncate(time.Millisecond)
	r.Outcome = &handlers.Event{Subject: "pathling.sync.completed.tgt", Body: []byte(`{"requestId":"req:1/a"}`)}
	if err := s.SaveRun(ctx, l, r); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("terminal ttl = %s, want about the 1h retention", ttl)
	}
	got, err := s.LoadRun(ctx, "tgt", "req:1/a")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != handlers.RunCompleted || got.Attempts != 2 || got.Params.Since == nil || !got.Params.Since.Equal(since) ||
		!got.FinishedAt.Equal(r.FinishedAt) || got.Outcome == nil || string(got.Outcome.Body) != `{"requestId":"req:1/a"}` {
		t.Fatalf("loaded %+v", got)
	}

	// Retention off: records persist.
	s2 := redisstore.New(c, redisstore.WithPrefix(testPrefix), redisstore.WithRetention(0))
	if err := s2.SaveRun(ctx, l, r); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl != -1 {
		t.Fatalf("ttl without retention = %s, want none", ttl)
	}
}

func TestWatermark(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	if _, ok, err := s.Watermark(ctx, "tgt", "k"); ok || err != nil {
		t.Fatalf("missing watermark: ok=%v err=%v", ok, err)
	}
	l := acquire(t, s, "tgt", "req-1", time.Minute)
	t1 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)

	if err := s.CommitWatermark(ctx, l, "k", t2.Add(123456*time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.Watermark(ctx, "tgt", "k"); err != nil || !ok || !got.Equal(t2) {
		t.Fatalf("watermark = %s %v %v, want %s (ms precision, rounded down)", got, ok, err, t2)
	}
	// Never backwards.
	if err := s.CommitWatermark(ctx, l, "k", t1); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Watermark(ctx, "tgt", "k"); !got.Equal(t2) {
		t.Fatalf("watermark moved back to %s", got)
	}
	// Forwards, and keys are independent.
	t3 := t2.Add(time.Minute)
	if err := s.CommitWatermark(ctx, l, "k", t3); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitWatermark(ctx, l, "other", t1); err != nil {
		t.Fatal(err)
	}
	all, err := s.Watermarks(ctx, "tgt")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || !all["k"].Equal(t3) || !all["other"].Equal(t1) {
		t.Fatalf("watermarks = %v", all)
	}

	// A stale lease cannot commit, even forwards.
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitWatermark(ctx, l, "k", t3.Add(time.Hour)); !errors.Is(err, handlers.ErrLockVanished) {
		t.Fatalf("stale commit: %v", err)
	}
	if got, _, _ := s.Watermark(ctx, "tgt", "k"); !got.Equal(t3) {
		t.Fatalf("stale commit moved the watermark to %s", got)
	}
}

func queued(target, request string, seq uint64, deadline time.Time) handlers.AcquireRequest {
	return handlers.AcquireRequest{
		Target: target, RequestID: request, TTL: time.Minute,
		Queue: &handlers.QueueTicket{Seq: seq, Deadline: deadline},
	}
}

func TestQueueOrder(t *testing.T) {
	ctx := context.Background()
	clk := testenv.NewClock(time.Now())
	s, _ := newStore(t, redisstore.WithClock(clock.Func(clk.Now)))
	deadline := clk.Now().Add(time.Hour)

	// A forbid run holds the target while three queued requests arrive out of order.
	blocker := acquire(t, s, "tgt", "blocker", time.Minute)
	for _, seq := range []uint64{3, 1, 2} {
		_, err := s.Acquire(ctx, queued("tgt", fmt.Sprintf("req-%d", seq), seq, deadline))
		wantHeldBy(t, err, "blocker")
	}
	q, err := s.Queue(ctx, "tgt")
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 3 || q[0].RequestID != "req-1" || q[0].Seq != 1 || q[2].RequestID != "req-3" ||
		q[0].Deadline.UnixMilli() != deadline.UnixMilli() {
		t.Fatalf("queue = %+v", q)
	}
	if err := s.Release(ctx, blocker); err != nil {
		t.Fatal(err)
	}

	for _, want := range []uint64{1, 2, 3} {
		for _, seq := range []uint64{3, 2, 1} {
			if seq < want {
				continue // already served
			}
			l, err := s.Acquire(ctx, queued("tgt", fmt.Sprintf("req-%d", seq), seq, deadline))
			if seq != want {
				if !errors.Is(err, handlers.ErrNotYourTurn) {
					t.Fatalf("seq %d while %d is due: err = %v", seq, want, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("seq %d: %v", seq, err)
			}
			// While it runs the others are told who holds the lock.
			for later := seq + 1; later <= 3; later++ {
				_, err := s.Acquire(ctx, queued("tgt", fmt.Sprintf("req-%d", later), later, deadline))
				wantHeldBy(t, err, fmt.Sprintf("req-%d", seq))
			}
			if err := s.Release(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
	}
	if q, _ := s.Queue(ctx, "tgt"); len(q) != 0 {
		t.Fatalf("queue not empty: %+v", q)
	}
}

func TestQueueSkipsExpiredHead(t *testing.T) {
	ctx := context.Background()
	clk := testenv.NewClock(time.Now())
	s, _ := newStore(t, redisstore.WithClock(clock.Func(clk.Now)))

	blocker := acquire(t, s, "tgt", "blocker", time.Minute)
	_, err := s.Acquire(ctx, queued("tgt", "early", 1, clk.Now().Add(time.Minute)))
	wantHeldBy(t, err, "blocker")
	_, err = s.Acquire(ctx, queued("tgt", "late", 2, clk.Now().Add(time.Hour)))
	wantHeldBy(t, err, "blocker")
	if err := s.Release(ctx, blocker); err != nil {
		t.Fatal(err)
	}

	// Before the head's deadline, the second in line waits.
	if _, err := s.Acquire(ctx, queued("tgt", "late", 2, clk.Now().Add(time.Hour))); !errors.Is(err, handlers.ErrNotYourTurn) {
		t.Fatalf("before deadline: %v", err)
	}
	clk.Advance(2 * time.Minute)
	l, err := s.Acquire(ctx, queued("tgt", "late", 2, clk.Now().Add(time.Hour)))
	if err != nil {
		t.Fatalf("after the head expired: %v", err)
	}
	if l.RequestID != "late" {
		t.Fatalf("lease = %+v", l)
	}
	if q, _ := s.Queue(ctx, "tgt"); len(q) != 0 {
		t.Fatalf("expired ticket kept: %+v", q)
	}
}

func TestForbidIgnoresQueueAndRedeliveryKeepsPlace(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	deadline := time.Now().Add(time.Hour)

	holder := acquire(t, s, "tgt", "holder", time.Minute)
	_, err := s.Acquire(ctx, queued("tgt", "q1", 10, deadline))
	wantHeldBy(t, err, "holder")
	// Redelivered with a different seq: keeps the first place it got.
	_, err = s.Acquire(ctx, queued("tgt", "q1", 99, deadline))
	wantHeldBy(t, err, "holder")
	_, err = s.Acquire(ctx, queued("tgt", "q2", 20, deadline))
	wantHeldBy(t, err, "holder")
	if q, _ := s.Queue(ctx, "tgt"); len(q) != 2 || q[0].RequestID != "q1" || q[0].Seq != 10 {
		t.Fatalf("queue = %+v", q)
	}

	// The queued holder's redelivery takes its own lock over.
	if err := s.Release(ctx, holder); err != nil {
		t.Fatal(err)
	}
	l1, err := s.Acquire(ctx, queued("tgt", "q1", 10, deadline))
	if err != nil {
		t.Fatal(err)
	}
	l1b, err := s.Acquire(ctx, queued("tgt", "q1", 10, deadline))
	if err != nil || l1b.Token <= l1.Token {
		t.Fatalf("queued takeover: %+v %v", l1b, err)
	}
	if q, _ := s.Queue(ctx, "tgt"); len(q) != 1 || q[0].RequestID != "q2" {
		t.Fatalf("queue after takeover = %+v", q)
	}

	// A forbid request takes a free lock even with tickets waiting.
	if err := s.Release(ctx, l1b); err != nil {
		t.Fatal(err)
	}
	acquire(t, s, "tgt", "forbid", time.Minute)
	_, err = s.Acquire(ctx, queued("tgt", "q2", 20, deadline))
	wantHeldBy(t, err, "forbid")
}

func TestReleaseFinished(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	l := acquire(t, s, "tgt", "done", time.Minute)

	if err := s.ReleaseFinished(ctx, "tgt", "someone-else"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lock(ctx, "tgt"); !ok {
		t.Fatal("ReleaseFinished of another request freed the lock")
	}
	if err := s.ReleaseFinished(ctx, "tgt", "done"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lock(ctx, "tgt"); ok {
		t.Fatal("lock still held")
	}
	if err := s.Renew(ctx, l, time.Minute); !errors.Is(err, handlers.ErrLockVanished) {
		t.Fatalf("renew after ReleaseFinished: %v", err)
	}

	// It also drops the request's queue ticket.
	acquire(t, s, "tgt", "blocker", time.Minute)
	_, err := s.Acquire(ctx, queued("tgt", "q", 1, time.Now().Add(time.Hour)))
	wantHeldBy(t, err, "blocker")
	if err := s.ReleaseFinished(ctx, "tgt", "q"); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Queue(ctx, "tgt"); len(q) != 0 {
		t.Fatalf("ticket kept: %+v", q)
	}
	if _, ok, _ := s.Lock(ctx, "tgt"); !ok {
		t.Fatal("blocker's lock freed")
	}
}

func TestConcurrentAcquireOneWinner(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	const n = 50
	var (
		wg     sync.WaitGroup
		won    atomic.Int32
		held   atomic.Int32
		others = make(chan error, n)
		start  = make(chan struct{})
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Acquire(ctx, handlers.AcquireRequest{Target: "tgt", RequestID: fmt.Sprintf("req-%d", i), TTL: time.Minute})
			var lh *handlers.LockHeldError
			switch {
			case err == nil:
				won.Add(1)
			case errors.As(err, &lh):
				held.Add(1)
			default:
				others <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(others)
	for err := range others {
		t.Errorf("unexpected error: %v", err)
	}
	if won.Load() != 1 || held.Load() != n-1 {
		t.Fatalf("won %d, held %d; want 1 and %d", won.Load(), held.Load(), n-1)
	}
}

func TestListRunsAndLock(t *testing.T) {
	ctx := context.Background()
	clk := testenv.NewClock(time.Now())
	s, _ := newStore(t, redisstore.WithClock(clock.Func(clk.Now)), redisstore.WithRetention(time.Hour))

	if runs, err := s.ListRuns(ctx, "tgt"); err != nil || len(runs) != 0 {
		t.Fatalf("empty: %v %v", runs, err)
	}
	if _, ok, err := s.Lock(ctx, "tgt"); ok || err != nil {
		t.Fatalf("free lock: ok=%v err=%v", ok, err)
	}

	base := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	// b and a finished (lock released); c is still running and holds the lock.
	for i, id := range []string{"b", "a", "c"} {
		l := acquire(t, s, "tgt", id, time.Minute)
		r := newRun(l, handlers.RunCompleted)
		r.StartedAt = base.Add(time.Duration(i) * time.Minute)
		if id == "c" {
			r.State = handlers.RunPolling
		}
		if err := s.SaveRun(ctx, l, r); err != nil {
			t.Fatal(err)
		}
		if r.State.Terminal() {
			if err := s.Release(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
	}
	runs, err := s.ListRuns(ctx, "tgt")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range runs {
		got = append(got, r.RequestID+"="+string(r.State))
	}
	if strings.Join(got, ",") != "b=completed,a=completed,c=polling" {
		t.Fatalf("runs = %v", got)
	}
	if info, ok, _ := s.Lock(ctx, "tgt"); !ok || info.RequestID != "c" {
		t.Fatalf("lock = %+v %v", info, ok)
	}
}

func TestKeysCarryPrefixAndHashTag(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	l := acquire(t, s, "tgt-1", "r:1/x", time.Minute)
	if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitWatermark(ctx, l, "wm", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Acquire(ctx, queued("tgt-1", "q", 1, time.Now().Add(time.Hour)))
	wantHeldBy(t, err, "r:1/x")

	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		testPrefix + "{tgt-1}:lock":           true,
		testPrefix + "{tgt-1}:fence":          true,
		testPrefix + "{tgt-1}:run:r:1/x":      true,
		testPrefix + "{tgt-1}:runs":           true,
		testPrefix + "{tgt-1}:wm":             true,
		testPrefix + "{tgt-1}:queue":          true,
		testPrefix + "{tgt-1}:queue:deadline": true,
	}
	if len(keys) != len(want) {
		t.Fatalf("keys = %v", keys)
	}
	for _, k := range keys {
		if !want[k] {
			t.Errorf("unexpected key %q", k)
		}
		if !strings.HasPrefix(k, testPrefix+"{tgt-1}:") {
			t.Errorf("key %q lacks the prefix and hash tag", k)
		}
	}
}

func TestTargetsFromKeys(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for _, target := range []string{"b-2", "a_1"} {
		if _, err := s.Acquire(ctx, handlers.AcquireRequest{Target: target, RequestID: "r", TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "a_1" || got[1] != "b-2" {
		t.Fatalf("targets %v, want [a_1 b-2]", got)
	}
}
