package handlers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// releases runs the release announcements of a store with key prefix prefix
// on the env's Redis until the test ends, and returns them once they are
// heard.
func (e *env) releases(prefix string) *redisstore.Releases {
	e.t.Helper()
	rel := redisstore.NewReleases(e.rdb, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rel.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		ch, stop := rel.WatchRelease("probe")
		defer stop()
		if err := e.rdb.Publish(context.Background(), redisstore.ReleaseChannel(prefix), "probe").Err(); err != nil {
			e.t.Fatal(err)
		}
		select {
		case <-ch:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}, "release announcements heard")
	return rel
}

// runningUntil answers every poll "running" until open is closed: the run
// holds its target's lock as long as the test wants.
type runningUntil struct {
	handlers.Pathling
	open <-chan struct{}
}

func (g runningUntil) Status(ctx context.Context, statusURL string) (handlers.JobStatus, error) {
	select {
	case <-g.open:
		return g.Pathling.Status(ctx, statusURL)
	default:
		return handlers.JobStatus{State: handlers.JobRunning}, nil
	}
}

// eventCounts counts the run events per kind and request.
type eventCounts struct {
	mu sync.Mutex
	n  map[string]int // kind + " " + request id
}

func newEventCounts() *eventCounts { return &eventCounts{n: map[string]int{}} }

func (r *eventCounts) RunEvent(_ context.Context, ev handlers.RunEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[ev.Kind+" "+ev.RequestID]++
}

func (r *eventCounts) count(kind, requestID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[kind+" "+requestID]
}

// waitingHere waits until each of the queued requests has met the busy lock
// after settling in the queue (a second lock conflict: the first is its
// settling) and n watches are open: they wait in the process for the
// release (without announcements they would be redelivered after
// QueueRetry instead).
func waitingHere(t *testing.T, ev *eventCounts, rel *redisstore.Releases, ids ...string) {
	t.Helper()
	testenv.Eventually(t, waitLong, func() bool {
		for _, id := range ids {
			if ev.count(handlers.EventLockConflict, id) < 2 {
				return false
			}
		}
		return true
	}, "queued requests %v meeting the busy lock", ids)
	testenv.Eventually(t, waitLong, func() bool { return rel.Watching() == len(ids) },
		"queued requests %v waiting here for the release", ids)
}

// A queued request whose target is busy starts when the lock is released,
// not after QueueRetry: here an hour, so only the release announcement can
// start it within the test.
func TestQueuedRequestStartsOnRelease(t *testing.T) {
	e := newEnv(t, envOptions{})
	rel := e.releases("test:")
	ev := newEventCounts()
	open := make(chan struct{})
	gated := e.target(func(t *handlers.Target) {
		t.Pathling = runningUntil{Pathling: t.Pathling, open: open}
		t.KeepJobs = true // to compare job times
	})
	e.start(e.js, e.syncer(syncerOptions{queueRetry: time.Hour, releases: rel, observer: ev}, gated), 0)

	e.request("t1", "first", req{"types": []string{"Patient"}})
	testenv.Eventually(t, waitLong, func() bool { return ev.count(handlers.EventKickedOff, "first") == 1 }, "first kicked off")
	e.request("t1", "second", req{"concurrency": "queue", "types": []string{"Observation"}})
	waitingHere(t, ev, rel, "second")

	close(open)
	e.outcomes.of(t, "first", waitLong).completedBody(t)
	e.outcomes.of(t, "second", waitLong).completedBody(t)
	jobs := e.emu.Jobs()
	if len(jobs) != 2 || jobs[1].Created.Before(jobs[0].Finished) {
		t.Fatalf("jobs %+v: want two, the second created after the first finished", jobs)
	}
	if n := ev.count(handlers.EventRedelivered, "second"); n != 0 {
		t.Fatalf("second delivered %d times after the first, want 0 (it settles in the queue here)", n)
	}
}

// Several queued requests wait here for one target: each release starts
// the next, in arrival order, one import at a time, and only the next asks.
func TestQueueWaitersServedInArrivalOrder(t *testing.T) {
	e := newEnv(t, envOptions{})
	rel := e.releases("test:")
	ev := newEventCounts()
	open := make(chan struct{})
	gated := e.target(func(t *handlers.Target) {
		t.Pathling = runningUntil{Pathling: t.Pathling, open: open}
		t.KeepJobs = true
	})
	e.start(e.js, e.syncer(syncerOptions{queueRetry: time.Hour, releases: rel, observer: ev}, gated), 0)

	e.request("t1", "first", req{"types": []string{"TypeZ"}})
	testenv.Eventually(t, waitLong, func() bool { return ev.count(handlers.EventKickedOff, "first") == 1 }, "first kicked off")
	var queued []string
	for i := range 4 {
		id := fmt.Sprintf("q-%d", i)
		queued = append(queued, id)
		// Different types make different Pathling requests (distinct jobs).
		e.request("t1", id, req{"concurrency": "queue", "types": []string{fmt.Sprintf("Type%c", 'A'+i)}})
	}
	waitingHere(t, ev, rel, queued...)

	close(open)
	all := e.outcomes.wait(t, 5, waitLong)
	for i, o := range all {
		want := "first"
		if i > 0 {
			want = queued[i-1]
		}
		if got := o.completedBody(t).RequestID; got != want {
			t.Fatalf("outcome %d is %s, want %s (arrival order)", i, got, want)
		}
	}
	jobs := e.emu.Jobs()
	if len(jobs) != 5 {
		t.Fatalf("%d jobs, want 5", len(jobs))
	}
	for i := 1; i < len(jobs); i++ {
		if jobs[i].Created.Before(jobs[i-1].Finished) {
			t.Fatalf("job %d started at %s before job %d finished at %s", i, jobs[i].Created, i-1, jobs[i-1].Finished)
		}
	}
	if c := e.emu.Counters(); c.Accepted != 5 {
		t.Fatalf("%d kick-offs, want 5", c.Accepted)
	}
	// On each release only the earliest waiting asks: each met the busy
	// lock twice (settling, then the first's lock), never more.
	for _, id := range queued {
		if n := ev.count(handlers.EventLockConflict, id); n != 2 {
			t.Errorf("%s met the lock %d times, want 2", id, n)
		}
	}
}

// An announcement that never comes (lost: here the announcements of
// another prefix are heard, so none of this store's) costs QueueRetry: the
// waiting request asks again after it, still in the process (no
// redelivery), and starts after the release.
func TestLostReleaseAnnouncementFallsBackToQueueRetry(t *testing.T) {
	e := newEnv(t, envOptions{})
	rel := e.releases("elsewhere:")
	ev := newEventCounts()
	open := make(chan struct{})
	gated := e.target(func(t *handlers.Target) { t.Pathling = runningUntil{Pathling: t.Pathling, open: open} })
	e.start(e.js, e.syncer(syncerOptions{queueRetry: 200 * time.Millisecond, releases: rel, observer: ev}, gated), 0)

	e.request("t1", "first", req{})
	testenv.Eventually(t, waitLong, func() bool { return ev.count(handlers.EventKickedOff, "first") == 1 }, "first kicked off")
	e.request("t1", "second", req{"concurrency": "queue", "types": []string{"Observation"}})
	// It asks again after each QueueRetry, in the same delivery.
	testenv.Eventually(t, waitLong, func() bool { return ev.count(handlers.EventLockConflict, "second") >= 4 }, "second asks again")

	close(open)
	e.outcomes.of(t, "first", waitLong).completedBody(t)
	e.outcomes.of(t, "second", waitLong).completedBody(t)
	if n := ev.count(handlers.EventRedelivered, "second"); n != 0 {
		t.Fatalf("second delivered %d times after the first, want 0 (it settles in the queue here)", n)
	}
}

// A queued request's first attempt only takes its place in the queue; it
// asks again after the settle delay in the same delivery, not in a
// redelivery (a NAK and a delivery more per queued request).
func TestQueuedRequestSettlesWithoutRedelivery(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := newEventCounts()
	e.start(e.js, e.syncer(syncerOptions{queueRetry: 100 * time.Millisecond, releases: e.releases("test:"), observer: ev}), 0)
	for i := range 3 {
		e.request("t1", fmt.Sprintf("q-%d", i), req{"concurrency": "queue", "types": []string{fmt.Sprintf("Type%c", 'A'+i)}})
	}
	all := e.outcomes.wait(t, 3, waitLong)
	for i, o := range all {
		if got, want := o.completedBody(t).RequestID, fmt.Sprintf("q-%d", i); got != want {
			t.Fatalf("outcome %d is %s, want %s (arrival order)", i, got, want)
		}
	}
	for i := range 3 {
		id := fmt.Sprintf("q-%d", i)
		if n := ev.count(handlers.EventRedelivered, id); n != 0 {
			t.Errorf("%s delivered %d times more, want 0 (settled in its first delivery)", id, n)
		}
	}
}
