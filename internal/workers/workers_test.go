package workers

import (
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// Jobs offered one after another run on the worker the first started
// (not one goroutine each), which exits once idle.
func TestWorkerTakesTheNextJobAndExitsWhenIdle(t *testing.T) {
	var wg sync.WaitGroup
	p := New(100, time.Second, func(int) { wg.Done() })
	for i := range 100 {
		wg.Add(1)
		p.Go(i)
		wg.Wait()
		time.Sleep(2 * time.Millisecond) // for the worker to wait for the next job
	}
	// A worker only starts when none waits: under load a few may, not 100.
	if n := p.Live(); n < 1 || n > 10 {
		t.Fatalf("%d workers after 100 jobs one at a time, want 1 (a few under load)", n)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return p.Live() == 0 }, "the idle workers exited")
}

// A job never waits for a busy worker, and no more than max workers live:
// beyond them a job runs on a goroutine of its own.
func TestJobsNeverWaitAndWorkersAreBounded(t *testing.T) {
	const max, jobs = 3, 10
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(jobs)
	p := New(max, time.Minute, func(int) {
		started.Done()
		<-release
	})
	for i := range jobs {
		p.Go(i) // must not block although every worker is busy
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("not every job started while the workers were busy")
	}
	if n := p.Live(); n != max {
		t.Fatalf("%d workers, want %d", n, max)
	}
	close(release)
}
