package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// Parked waits are kept per context's Done channel, one callback for all,
// and dropped when they wake; a context that cannot end keeps none.
func TestParkedRunsBookkeeping(t *testing.T) {
	p := newParkedRuns()
	ctx, cancel := context.WithCancel(context.Background())
	type key struct{}
	a := &parkedWait{ctx: context.WithValue(ctx, key{}, "a"), woken: true} // woken: wake does nothing
	b := &parkedWait{ctx: ctx, woken: true}
	p.add(a.ctx, a)
	p.add(b.ctx, b)
	p.add(context.Background(), &parkedWait{woken: true})
	if n, chans := p.parkedCount(), len(p.byDone); n != 2 || chans != 1 {
		t.Fatalf("%d parked over %d Done channels, want 2 over 1", n, chans)
	}
	p.remove(a.ctx, a)
	if n := p.parkedCount(); n != 1 {
		t.Fatalf("%d parked after a woke, want 1", n)
	}
	cancel()
	testenv.Eventually(t, 10*time.Second, func() bool { return p.parkedCount() == 0 }, "the ended context's waits dropped")
	if len(p.byDone) != 0 {
		t.Fatalf("%d Done channels kept after their context ended", len(p.byDone))
	}
}

// benchStatus is a job's status document, as a resumed poll decodes it.
var benchStatus = []byte(`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueInstant":"2026-01-02T03:04:05Z"},` +
	`{"name":"output","part":[{"name":"type","valueCode":"Patient"},{"name":"url","valueUri":"http://pathling/fhir/$result?id=1"},` +
	`{"name":"extension","part":[{"name":"count","valueInteger":12},{"name":"nested","part":[{"name":"a","part":[{"name":"b","valueString":"c"}]}]}]}]}]}`)

// BenchmarkParkedResume is a parked run's resumed step, from its timer's
// callback (a fresh goroutine, as the runtime's timer calls it) to its
// delivery's settle: here the step stops at once (its context has ended)
// and the settle decodes a job status, standing in for a poll's work.
func BenchmarkParkedResume(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resumed := make(chan struct{})
	log := slog.New(slog.DiscardHandler)
	dr := &driver{
		deps: &deps{clock: clock.System{}, logger: log, parked: newParkedRuns()},
		run:  &Run{State: RunPolling, Deadline: time.Now().Add(time.Hour)},
		log:  log,
	}
	dr.settle = func(d Disposition) {
		if d.Action != Nak {
			b.Errorf("settled %s, want nak (shutting down)", d.Action)
		}
		var v any
		if err := json.Unmarshal(benchStatus, &v); err != nil {
			b.Error(err)
		}
		resumed <- struct{}{}
	}
	b.ReportAllocs()
	for b.Loop() {
		w := &parkedWait{dr: dr, ctx: ctx}
		go w.wake()
		<-resumed
	}
}

// stoppingDriver is a parked run whose next step stops at once (its
// context has ended) and hands its disposition to settled.
func stoppingDriver(p *parkedRuns, settled func(Disposition)) *driver {
	log := slog.New(slog.DiscardHandler)
	return &driver{
		deps:   &deps{clock: clock.System{}, logger: log, parked: p},
		run:    &Run{State: RunPolling, Deadline: time.Now().Add(time.Hour)},
		log:    log,
		settle: settled,
	}
}

// A woken run's step runs on a resume worker, not in the goroutine that
// woke it (a timer's, with a small stack), and steps woken one after
// another reuse the worker rather than each starting a goroutine.
func TestResumedStepsRunOnWorkers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := newParkedRuns()
	settled := make(chan []byte)
	dr := stoppingDriver(p, func(Disposition) {
		buf := make([]byte, 64<<10)
		settled <- buf[:runtime.Stack(buf, false)]
	})
	for range 50 {
		w := &parkedWait{dr: dr, ctx: ctx}
		go w.wake()
		if stack := <-settled; !bytes.Contains(stack, []byte("workers.(*Pool[...]).work")) {
			t.Fatalf("the step ran outside a resume worker:\n%s", stack)
		}
		time.Sleep(2 * time.Millisecond) // for the worker to wait for the next step
	}
	if n := p.resumes.Live(); n < 1 || n > 10 {
		t.Fatalf("%d resume workers after 50 steps one at a time, want 1 (a few under load)", n)
	}
}

// At shutdown every parked run is woken once, and its step answers Nak,
// with more runs parked than there are resume workers.
func TestShutdownWakesEveryParkedRunOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := newParkedRuns()
	const runs = resumeWorkers + 100
	var mu sync.Mutex
	settles := map[*driver]int{}
	var all sync.WaitGroup
	all.Add(runs)
	for range runs {
		var dr *driver
		dr = stoppingDriver(p, func(d Disposition) {
			if d.Action != Nak {
				t.Errorf("settled %s, want nak", d.Action)
			}
			mu.Lock()
			settles[dr]++
			mu.Unlock()
			all.Done()
		})
		w := &parkedWait{dr: dr, ctx: ctx}
		p.add(ctx, w)
		w.stopTimer = clock.AfterFunc(clock.System{}, time.Hour, w.wake)
	}
	cancel()
	done := make(chan struct{})
	go func() { all.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not every parked run settled after shutdown")
	}
	time.Sleep(10 * time.Millisecond) // a second wake would settle again
	mu.Lock()
	defer mu.Unlock()
	for _, n := range settles {
		if n != 1 {
			t.Fatalf("a run settled %d times, want 1", n)
		}
	}
	if len(settles) != runs || p.parkedCount() != 0 {
		t.Fatalf("%d runs settled, %d still parked; want %d and 0", len(settles), p.parkedCount(), runs)
	}
}
