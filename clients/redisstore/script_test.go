package redisstore_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// Concurrent script calls share round trips, each caller gets its own
// answer, and a lost script cache (SCRIPT FLUSH) costs only a re-send of the
// entries that missed.
func TestConcurrentScriptCallsShareRoundTrips(t *testing.T) {
	s, c := newStore(t)
	rt := &redisstore.RoundTrips{}
	c.AddHook(rt)
	ctx := context.Background()
	for round := range 2 {
		if round == 1 {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		const n = 64
		before := rt.Load()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				target := "t" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
				errs[i] = fastSyncOn(s, target, "req-"+strconv.Itoa(i), nil)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d sync %d: %v", round, i, err)
			}
		}
		for i := range n {
			target := "t" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
			r, err := s.LoadRun(ctx, target, "req-"+strconv.Itoa(i))
			if err != nil || r == nil || r.RequestID != "req-"+strconv.Itoa(i) || r.Target != target || r.State != handlers.RunCompleted {
				t.Fatalf("round %d: record of %s: %+v %v", round, target, r, err)
			}
		}
		// 4 script calls a sync; on their own they would be n*4 round trips.
		if got := rt.Load() - before; round == 0 && got >= 4*n {
			t.Errorf("%d round trips for %d concurrent syncs' %d script calls: not batched", got, n, 4*n)
		}
	}
}

// A caller that stops waiting (its context ends) while its call waits for
// the next batch returns its context's error, and its record buffer is not
// reused by another call before that batch writes it: the record written is
// its own, not the next caller's.
func TestAbandonedScriptCallKeepsItsRecord(t *testing.T) {
	srv := testenv.StartRedis(t)
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	s := redisstore.New(c, redisstore.WithPrefix(testPrefix))
	ctx := context.Background()
	la := acquire(t, s, "ta", "req-a", time.Hour)
	lb := acquire(t, s, "tb", "req-b", time.Hour)
	lc := acquire(t, s, "tc", "req-c", time.Hour)
	ra, rb, rc := newRun(la, handlers.RunPolling), newRun(lb, handlers.RunPolling), newRun(lc, handlers.RunPolling)
	rb.StatusURL = "https://pathling.example/fhir/$job?id=b"
	// Fill the buffer pool.
	for _, x := range []struct {
		l handlers.Lease
		r *handlers.Run
	}{{la, ra}, {lb, rb}, {lc, rc}} {
		if err := s.SaveRun(ctx, x.l, x.r); err != nil {
			t.Fatal(err)
		}
	}

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	var wg sync.WaitGroup
	errA, errC := make(chan error, 1), make(chan error, 1)
	wg.Go(func() { errA <- s.SaveRun(ctx, la, ra) }) // the batch in flight, stalled
	time.Sleep(100 * time.Millisecond)
	bctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	rb.Polls = 7
	err = s.SaveRun(bctx, lb, rb) // waits for the next batch, then gives up
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("abandoned call: err = %v, want its context's", err)
	}
	rc.StatusURL = "https://pathling.example/fhir/$job?id=c-and-a-much-longer-status-url-than-b-had"
	wg.Go(func() { errC <- s.SaveRun(ctx, lc, rc) })
	time.Sleep(100 * time.Millisecond)
	srv.Resume()
	resumed = true
	wg.Wait()
	if err := <-errA; err != nil {
		t.Fatal(err)
	}
	if err := <-errC; err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadRun(ctx, "tb", "req-b")
	if err != nil {
		t.Fatal(err)
	}
	// The abandoned call may or may not have run; whichever it is, the
	// record is b's.
	if got == nil || got.RequestID != "req-b" || got.Target != "tb" || got.StatusURL != rb.StatusURL {
		t.Fatalf("b's record = %+v", got)
	}
	if got.Polls != 7 {
		t.Logf("the abandoned call did not run (polls %d)", got.Polls)
	}
}
