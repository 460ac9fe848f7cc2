// Package workers runs jobs on long-lived goroutines, so that each job
// starts on a stack already grown by the jobs before it rather than on a
// new goroutine's small one (runtime.newstack and copystack, plus the
// goroutine's creation and exit, for every message).
package workers

import (
	"sync/atomic"
	"time"
)

// Pool runs each job on an idle worker, or on a new one when none is idle.
// A job never waits for a busy worker: Go runs it at once, as a go
// statement would. A worker that has been idle for a whole idle period
// exits, so an idle service keeps few goroutines.
type Pool[J any] struct {
	run  func(J)
	max  int64
	idle time.Duration

	// jobs is unbuffered: a send succeeds only when a worker is waiting in
	// receive, so a job is never queued behind a busy one.
	jobs chan J
	live atomic.Int64 // workers alive, busy or idle
}

// New returns a pool that calls run for each job on at most max workers
// (max ≥ 1); a worker exits after between idle and twice idle without a job.
// With all max workers busy, a job runs on a goroutine of its own, which
// exits after it.
func New[J any](max int, idle time.Duration, run func(J)) *Pool[J] {
	return &Pool[J]{run: run, max: int64(max), idle: idle, jobs: make(chan J)}
}

// Go runs run(j) on an idle worker, a new worker, or (with max workers
// busy) a goroutine of its own. It never blocks.
func (p *Pool[J]) Go(j J) {
	select {
	case p.jobs <- j:
		return
	default:
	}
	if p.live.Add(1) > p.max {
		p.live.Add(-1)
		go p.run(j)
		return
	}
	go p.work(j)
}

// Live is how many workers are alive, busy or idle.
func (p *Pool[J]) Live() int { return int(p.live.Load()) }

// work runs j and then the jobs offered to it until it has been idle for a
// whole tick: one ticker per worker rather than a timer reset per job.
func (p *Pool[J]) work(j J) {
	defer p.live.Add(-1)
	p.run(j)
	var zero J
	j = zero // an idle worker keeps nothing of its last job
	tick := time.NewTicker(p.idle)
	defer tick.Stop()
	busy := false
	for {
		select {
		case j = <-p.jobs:
			p.run(j)
			j = zero
			busy = true
		case <-tick.C:
			if !busy {
				return
			}
			busy = false
		}
	}
}
