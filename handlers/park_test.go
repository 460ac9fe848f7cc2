package handlers_test

import (
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// driverGoroutines counts the goroutines whose stack is in a run's driver.
func driverGoroutines(t *testing.T) int {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "handlers.(*driver)") {
			n++
		}
	}
	return n
}

// Runs waiting for their next poll hold no goroutine (a timer resumes
// each): 20 runs of long jobs, parked between polls, leave no goroutine in
// a driver, keep their deliveries (in flight, no outcome), and stop at
// shutdown, their messages left for the next replica.
func TestWaitingRunsHoldNoGoroutine(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 100000}); err != nil {
		t.Fatal(err)
	}
	const runs = 20
	var targets []handlers.Target
	for i := range runs {
		targets = append(targets, e.target(func(t *handlers.Target) {
			t.Name = fmt.Sprintf("t%d", i)
			t.Poll = handlers.Backoff{Initial: time.Minute, Factor: 1, Max: time.Minute}
		}))
	}
	ev := newEventCounts()
	in := e.start(e.js, e.syncer(syncerOptions{lockTTL: time.Minute, observer: ev}, targets...), 0)
	for i := range runs {
		e.request(fmt.Sprintf("t%d", i), fmt.Sprintf("r%d", i), req{"types": []string{fmt.Sprintf("Type%c", 'A'+i)}})
	}
	testenv.Eventually(t, waitLong, func() bool { return e.emu.Counters().Accepted == runs }, "%d kick-offs", runs)
	testenv.Eventually(t, waitLong, func() bool { return driverGoroutines(t) == 0 },
		"no goroutine in a driver while %d runs wait (%d are)", runs, driverGoroutines(t))
	if n := in.cons.InFlight(); n != runs {
		t.Fatalf("%d deliveries in flight, want %d (parked runs keep theirs)", n, runs)
	}
	if n := len(e.outcomes.snapshot()); n != 0 {
		t.Fatalf("%d outcomes while the jobs run", n)
	}
	in.stop()
	if n := in.cons.InFlight(); n != 0 {
		t.Fatalf("%d deliveries in flight after shutdown, want 0 (each parked run stopped)", n)
	}
	for i := range runs {
		if n := ev.count(handlers.EventStopped, fmt.Sprintf("r%d", i)); n != 1 {
			t.Fatalf("r%d stopped %d times, want 1", i, n)
		}
	}
}

// panickingStatus is a Pathling whose status polls panic: a bug in a step
// that runs after a park, in a timer's goroutine rather than the consumer's.
type panickingStatus struct{ handlers.Pathling }

func (panickingStatus) Status(context.Context, string) (handlers.JobStatus, error) {
	panic("status poll bug")
}

// A panic in a parked run's later step does not crash the process: the
// run stops, its delivery is terminated (as the consumer does for a
// handler's panic: it would repeat on every redelivery), and the replica
// goes on.
func TestPanicAfterParkTerminatesTheDelivery(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := newEventCounts()
	target := e.target(func(t *handlers.Target) { t.Pathling = panickingStatus{t.Pathling} })
	in := e.start(e.js, e.syncer(syncerOptions{observer: ev}, target), 0)
	e.request("t1", "boom", req{})
	testenv.Eventually(t, waitLong, func() bool { return ev.count(handlers.EventStopped, "boom") == 1 }, "the run stopped")
	testenv.Eventually(t, waitLong, func() bool { return in.cons.InFlight() == 0 }, "its delivery settled")
	cons, err := e.js.Consumer(context.Background(), "PATHLING_SYNC", "pathling-sync")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitLong, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream >= 1
	}, "the delivery settled on the server (terminated, not left for redelivery)")
	if n := ev.count(handlers.EventRedelivered, "boom"); n != 0 {
		t.Fatalf("delivered again %d times after the panic", n)
	}
}
