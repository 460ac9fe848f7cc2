package handlers_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/handlers"
)

// precedence is the stream's answer for the harness's consumer.
func (e *env) precedence() handlers.Precedence {
	return natsbus.NewPrecedence(e.js, "PATHLING_SYNC", "pathling-sync", time.Millisecond)
}

// A queued request with no earlier request for its target on its way asks
// for the lock at once: no settle (which would count a lock conflict and
// take 250 ms here) and no second ask.
func TestLoneQueuedRequestAsksForTheLockAtOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := newEventCounts()
	e.start(e.js, e.syncer(syncerOptions{queueRetry: time.Hour, releases: e.releases("test:"), observer: ev, precedence: e.precedence()}), 0)
	for i := range 3 {
		id := fmt.Sprintf("q-%d", i)
		e.request("t1", id, req{"concurrency": "queue", "types": []string{"Patient"}})
		e.outcomes.wait(t, i+1, waitLong)
		if n := ev.count(handlers.EventLockConflict, id); n != 0 {
			t.Fatalf("%s met the lock %d times, want 0 (nothing before it: no settle)", id, n)
		}
	}
}

// Requests for one target delivered together still start in stream order
// when Precedence lets the earliest skip its settle: each later one has an
// earlier one on its way, so it settles behind it.
func TestQueuedRequestsDeliveredTogetherStartInOrderWithPrecedence(t *testing.T) {
	e := newEnv(t, envOptions{})
	rel := e.releases("test:")
	const targets, perTarget = 3, 4
	var ts []handlers.Target
	for j := range targets {
		ts = append(ts, e.target(func(t *handlers.Target) { t.Name = fmt.Sprintf("t%d", j+1) }))
	}
	e.start(e.js, e.syncer(syncerOptions{queueRetry: 50 * time.Millisecond, releases: rel, precedence: e.precedence()}, ts...), 0)
	for i := range perTarget {
		for j := range targets {
			e.request(fmt.Sprintf("t%d", j+1), fmt.Sprintf("t%d-q%d", j+1, i),
				req{"concurrency": "queue", "types": []string{fmt.Sprintf("Type%c", 'A'+i)}})
		}
	}
	all := e.outcomes.wait(t, targets*perTarget, waitLong)
	next := map[string]int{}
	for _, o := range all {
		b := o.completedBody(t)
		want := fmt.Sprintf("%s-q%d", b.Target, next[b.Target])
		if b.RequestID != want {
			t.Fatalf("target %s finished %s, want %s (stream order)", b.Target, b.RequestID, want)
		}
		next[b.Target]++
	}
}
