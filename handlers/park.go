package handlers

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/workers"
)

const (
	// resumeWorkers bounds the long-lived goroutines that run resumed steps
	// (the consumer's default MaxWorkers): more steps due at once each run on
	// a goroutine of their own, as they all did before.
	resumeWorkers = 256
	// resumeIdle is how long such a worker waits for the next step before
	// it exits (between one and two of it).
	resumeIdle = 2 * time.Second
)

// This file lets a run wait for its next step (a poll, a kick-off after a
// backoff) parked: its handler returns Parked, the consumer keeps the
// delivery alive, and a timer hands the run to a resume worker (a
// long-lived goroutine whose stack earlier steps have grown), which drives
// it on and settles the delivery (Delivery.Settle) when the run ends. Each
// wait also ends when the delivery's context does (shutdown), so that a
// parked run stops as a running one would.

// park is the wait before the next step of a run whose delivery can be
// settled later (settle): until the step, the lease's next renewal or the
// deadline, whichever comes first, the run holds no goroutine, only its
// state and a timer, which resumes it (resume). 10,000 runs waiting on
// hour-long jobs would otherwise park 10,000 goroutines, each with the
// stack its kick-off and polls grew (16 kB). It reports false when the
// step is due now.
func (dr *driver) park(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	at := dr.nextStepAt(ctx)
	now := dr.now()
	if err := dr.renewDue(ctx, now); err != nil {
		return false, err
	}
	next := at
	for _, t := range [...]time.Time{dr.nextRenew, dr.run.Deadline} {
		if t.Before(next) {
			next = t
		}
	}
	if !next.After(now) {
		return false, nil
	}
	w := &parkedWait{dr: dr, ctx: ctx}
	w.mu.Lock()
	defer w.mu.Unlock()
	dr.parked.add(ctx, w)
	w.stopTimer = clock.AfterFunc(dr.clock, next.Sub(now), w.wake)
	return true, nil
}

// parkedWait resumes a parked run once, when its timer fires or its context
// ends (shutdown), on a resume worker: the goroutine that fired (the
// timer's, new and with a small stack) only hands it over.
type parkedWait struct {
	dr  *driver
	ctx context.Context

	mu        sync.Mutex
	woken     bool
	stopTimer func() bool
}

func (w *parkedWait) wake() {
	w.mu.Lock()
	if w.woken {
		w.mu.Unlock()
		return
	}
	w.woken = true
	stopTimer := w.stopTimer
	w.mu.Unlock()
	// The other of the two must not keep the driver.
	if stopTimer != nil {
		stopTimer()
	}
	w.dr.parked.remove(w.ctx, w)
	w.dr.parked.resumes.Go(w)
}

// resume drives a parked run on until it is parked again or ends, then settles
// its delivery. A panic is a bug that would repeat on every redelivery: it
// terminates the message, as the consumer does for a handler's panic.
func (dr *driver) resume(ctx context.Context) {
	disp := Disposition{Action: Term}
	defer func() {
		if r := recover(); r != nil {
			dr.log.ErrorContext(ctx, "run panicked; terminating message", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		if disp.Action == Parked {
			return
		}
		dr.settleParked(ctx, disp)
	}()
	disp = dr.steps(ctx)
}

// settleParked runs what follows a drive and settles the delivery.
func (dr *driver) settleParked(ctx context.Context, disp Disposition) {
	if dr.finally != nil {
		dr.finally(ctx)
	}
	dr.settle(disp)
}

// parkedRuns wakes the parked runs whose context ended: one callback per
// context's Done channel (the consumer's, in the service), not one per
// parked wait, which would cost each wait a context and an entry in its
// parent's list.
type parkedRuns struct {
	mu     sync.Mutex
	byDone map[<-chan struct{}]map[*parkedWait]struct{}
	// resumes run the woken runs' next steps.
	resumes *workers.Pool[*parkedWait]
}

func newParkedRuns() *parkedRuns {
	return &parkedRuns{
		byDone:  map[<-chan struct{}]map[*parkedWait]struct{}{},
		resumes: workers.New(resumeWorkers, resumeIdle, func(w *parkedWait) { w.dr.resume(w.ctx) }),
	}
}

// add wakes w when ctx ends (never for a context that cannot end).
func (p *parkedRuns) add(ctx context.Context, w *parkedWait) {
	done := ctx.Done()
	if done == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	waits, ok := p.byDone[done]
	if !ok {
		waits = map[*parkedWait]struct{}{}
		p.byDone[done] = waits
		context.AfterFunc(ctx, func() { p.wakeAll(done) })
	}
	waits[w] = struct{}{}
}

func (p *parkedRuns) remove(ctx context.Context, w *parkedWait) {
	done := ctx.Done()
	if done == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byDone[done], w)
}

func (p *parkedRuns) wakeAll(done <-chan struct{}) {
	p.mu.Lock()
	waits := p.byDone[done]
	delete(p.byDone, done)
	p.mu.Unlock()
	// wake only hands each run to a worker (never blocking), so no
	// goroutine per run is needed here.
	for w := range waits {
		w.wake()
	}
}

// parkedCount is how many parked waits end with a context (for tests).
func (p *parkedRuns) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, waits := range p.byDone {
		n += len(waits)
	}
	return n
}
