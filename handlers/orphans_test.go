package handlers_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// orphan times out request "first" while Pathling refuses connections, from
// the first poll on to past the timeout's DELETE: the job stays in Pathling.
// Jobs need three polls; the orphan has had one. It returns the orphan's
// status URL and the first run's watermark base (its kick-off, as the
// registry keeps it: milliseconds).
func orphan(t *testing.T, e *env) (jobURL string, kickedOff time.Time) {
	t.Helper()
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 3}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == handlers.EventPolled && ev.RequestID == "first" {
			once.Do(e.pathlingDown)
		}
	})
	tgt := e.target(func(t *handlers.Target) {
		t.DeleteRetry = handlers.Backoff{Initial: 10 * time.Millisecond, Factor: 2, Max: 40 * time.Millisecond}
	})
	e.start(e.js, e.syncer(syncerOptions{observer: obs}, tgt), 0)
	e.request("t1", "first", req{"since": "auto", "timeout": "1s"})
	if f := e.outcomes.of(t, "first", waitLong).failedBody(t); f.Reason != messages.ReasonTimeout {
		t.Fatalf("first: %+v", f)
	}
	run, err := e.store.LoadRun(context.Background(), "t1", "first")
	if err != nil {
		t.Fatal(err)
	}
	if jobs := e.emu.Jobs(); len(jobs) != 1 {
		t.Fatalf("want the orphan left in Pathling, have %d jobs", len(jobs))
	}
	e.pathlingUp()
	return run.StatusURL, run.FirstKickOff.Truncate(time.Millisecond)
}

// Issue #8.1: a sync times out while Pathling refuses connections, so its job
// is never deleted. Pathling hands the next identical since=auto request that
// older job; its data come from the older export, so the watermark must not
// be newer than the orphan's kick-off − overlap. The orphan is deleted later.
func TestOrphanReturnedByPathlingKeepsItsKickOff(t *testing.T) {
	e := newEnv(t, envOptions{})
	orphanURL, orphanKickOff := orphan(t, e)
	if orphanURL == "" {
		t.Fatal("the first run recorded no job")
	}
	// The DELETE before the next kick-off fails once: Pathling hands that
	// kick-off the orphan.
	if err := e.emu.Inject(pathlingemu.Injection{Target: pathlingemu.TargetDelete, Status: 503}); err != nil {
		t.Fatal(err)
	}
	e.request("t1", "second", req{"since": "auto"})
	c := e.outcomes.of(t, "second", waitLong).completedBody(t)
	if c.PathlingJob != orphanURL || e.emu.Counters().JobsCreated != 1 {
		t.Fatalf("second ran job %s (%d jobs created), want the orphan %s", c.PathlingJob, e.emu.Counters().JobsCreated, orphanURL)
	}
	wm, err := time.Parse(time.RFC3339Nano, c.Watermark)
	if err != nil {
		t.Fatal(err)
	}
	if limit := orphanKickOff.Add(-2 * time.Minute); wm.After(limit) {
		t.Fatalf("watermark %s is newer than the orphan's kick-off − overlap %s: changes in between would never sync",
			c.Watermark, messages.FormatInstant(limit))
	}
	// Deleted at the end of the run that finished it; nothing left to sweep.
	testenv.Eventually(t, waitLong, func() bool { return len(e.emu.Jobs()) == 0 }, "orphan deleted")
	if left, err := e.store.UndeletedJobs(context.Background(), "t1", 10); err != nil || len(left) != 0 {
		t.Fatalf("undeleted jobs %v (%v)", left, err)
	}
}

// Issue #8.1: the orphan is deleted before the next kick-off, which then gets
// a job of its own (a fresh export) instead of the orphan.
func TestOrphanDeletedBeforeNextKickOff(t *testing.T) {
	e := newEnv(t, envOptions{})
	orphanURL, _ := orphan(t, e)
	e.request("t1", "second", req{"since": "auto"})
	c := e.outcomes.of(t, "second", waitLong).completedBody(t)
	if c.PathlingJob == orphanURL {
		t.Fatalf("second ran the orphan %s", orphanURL)
	}
	counters := e.emu.Counters()
	if counters.JobsCreated != 2 {
		t.Fatalf("jobs created %d, want 2 (the orphan, then a new one)", counters.JobsCreated)
	}
	testenv.Eventually(t, waitLong, func() bool { return len(e.emu.Jobs()) == 0 }, "every job deleted")
	if left, err := e.store.UndeletedJobs(context.Background(), "t1", 10); err != nil || len(left) != 0 {
		t.Fatalf("undeleted jobs %v (%v)", left, err)
	}
}

// Issue #8.6: with this replica's clock 10 minutes ahead of Pathling's, a
// watermark of kick-off − 2 min would skip 8 minutes of changes: the run's
// overlap is widened by the skew, and the skew is reported.
func TestClockSkewWidensOverlap(t *testing.T) {
	const skew = 10 * time.Minute
	for _, c := range []struct {
		name      string
		pathling  time.Duration // Pathling's clock offset
		replica   time.Duration // the service's clock offset
		requestID string
	}{
		{"pathling behind", -skew, 0, "behind"},
		{"replica ahead", 0, skew, "ahead"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{clockSkew: c.pathling})
			if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1}); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var seen []time.Duration
			obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
				if ev.Kind == handlers.EventClockSkew {
					mu.Lock()
					seen = append(seen, ev.ClockSkew)
					mu.Unlock()
				}
			})
			now := func() time.Time { return time.Now().Add(c.replica) }
			e.start(e.js, e.syncer(syncerOptions{observer: obs, clock: clock.Func(now)}), 0)
			e.request("t1", c.requestID, req{})
			done := e.outcomes.of(t, c.requestID, waitLong).completedBody(t)
			run, err := e.store.LoadRun(context.Background(), "t1", c.requestID)
			if err != nil {
				t.Fatal(err)
			}
			wm, err := time.Parse(time.RFC3339Nano, done.Watermark)
			if err != nil {
				t.Fatal(err)
			}
			if limit := run.FirstKickOff.Add(-2*time.Minute - skew); wm.After(limit) {
				t.Fatalf("watermark %s, want at most kick-off − overlap − skew = %s", done.Watermark, messages.FormatInstant(limit))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) == 0 {
				t.Fatal("no clock skew reported")
			}
			for _, s := range seen {
				if s < skew || s > skew+2*time.Second {
					t.Fatalf("reported skews %v, want about %s", seen, skew)
				}
			}
		})
	}
}

// Clocks within a second of Pathling's do not widen the overlap.
func TestNoClockSkewKeepsOverlap(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1}); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "in-sync", req{})
	done := e.outcomes.of(t, "in-sync", waitLong).completedBody(t)
	run, err := e.store.LoadRun(context.Background(), "t1", "in-sync")
	if err != nil {
		t.Fatal(err)
	}
	if want := messages.FormatInstant(run.FirstKickOff.Add(-2 * time.Minute).Truncate(time.Millisecond)); done.Watermark != want {
		t.Fatalf("watermark %s, want kick-off − overlap %s", done.Watermark, want)
	}
}

// A DELETE that keeps failing is retried only while the lease holds: with a
// lock TTL shorter than the DELETE retries' backoff (1 s, 2 s, 4 s), retrying
// on would let the lock lapse, the outcome's fenced write fail, and the run be
// adopted and time out again and again with no outcome. The job is left to
// the next kick-off's sweep instead.
func TestDeleteRetriesStayWithinLease(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 3}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == handlers.EventPolled && ev.RequestID == "short" {
			once.Do(e.pathlingDown)
		}
	})
	var logs testenv.Buffer
	e.start(e.js, e.syncer(syncerOptions{observer: obs, lockTTL: 1500 * time.Millisecond, log: jsonLogger(&logs)}, e.target()), 0)
	e.request("t1", "short", req{"timeout": "1s"})
	if f := e.outcomes.of(t, "short", waitLong).failedBody(t); f.Reason != messages.ReasonTimeout {
		t.Fatalf("want timeout, got %+v", f)
	}
	left, err := e.store.UndeletedJobs(context.Background(), "t1", 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("undeleted jobs %v (%v), want the timed-out job", left, err)
	}
	// The lease never lapsed: no lock to take back, no false alarm of lost data.
	if strings.Contains(logs.String(), "lock vanished") || strings.Contains(logs.String(), "lost data") {
		t.Fatalf("the lease lapsed during DELETE retries:\n%s", logs.String())
	}
	e.pathlingUp()
}
