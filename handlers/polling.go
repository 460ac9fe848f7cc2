package handlers

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers/pollplan"
)

// How a driver paces the status polls of a job.
//
// A target whose PollPolicy is PollHistory, on a Syncer with a Durations
// port, plans each job's polls from the durations of its past jobs of the
// same shape (DurationShape): dense where such jobs ended, sparse where they
// did not, never closer than PollFloor nor further apart than Poll.Max
// (handlers/pollplan says how). With too little history, a seed policy or no
// port, the polls follow the seed cadence Poll, exactly as before. The
// driver keeps what this job's polls saw (X-Progress, Retry-After) in
// memory: an adopting driver after a crash starts them afresh, and counts
// the job's time from the run's only kick-off when there was one, else from
// the adoption.
//
// A job that completed adds its duration (halfway between the last poll that
// saw it running and the one that saw it done) to the history, best effort.

// maxObservations bounds the X-Progress readings kept per job (the newest).
const maxObservations = 32

// planRefresh is how long a learned planner is reused for a (target, shape)
// whose history changed since: building one costs a few milliseconds, and a
// history of up to 64 samples moves slowly. Real imports take minutes, so a
// history rarely gains more than a sample in that time; a flood of instant
// jobs builds at most one planner per (target, shape) and minute.
const planRefresh = time.Minute

// pollBudget is the expected polls per job of a learned plan, as a multiple
// of the seed cadence's over the same history: the more polls, the less
// lag. Measured polls come out a little above it (jobs outliving their
// history poll more); the issue allows 1.5×.
const pollBudget = 1.4

// plans builds and keeps one planner per (target, shape).
type plans struct {
	src Durations

	mu      sync.Mutex
	entries map[planKey]planEntry
}

type planKey struct{ target, shape string }

type planEntry struct {
	cfg     pollplan.Config
	history []time.Duration // what p was built from
	built   time.Time
	p       *pollplan.Planner
}

// newPlans returns nil when there is no history to plan from.
func newPlans(src Durations) *plans {
	if src == nil {
		return nil
	}
	return &plans{src: src, entries: map[planKey]planEntry{}}
}

// planConfig is the planner's cadence for t: its seed cadence and floor.
// The floor is at most the first wait, so that a plan never polls a job
// later at its start than the seed cadence would.
func planConfig(t *Target) pollplan.Config {
	return pollplan.Config{Initial: t.Poll.Initial, Factor: t.Poll.Factor, Cap: t.Poll.Max,
		Floor: min(t.PollFloor, t.Poll.Initial), Budget: pollBudget}
}

// planner returns the planner of jobs of shape on t at now: the cached one
// while its history is unchanged, or while it is learned and younger than
// planRefresh; else one built from the history read now.
func (ps *plans) planner(ctx context.Context, t *Target, shape string, now time.Time) (*pollplan.Planner, error) {
	hist, err := ps.src.Durations(ctx, t.Name, shape)
	if err != nil {
		return nil, err
	}
	cfg := planConfig(t)
	k := planKey{t.Name, shape}
	ps.mu.Lock()
	e, ok := ps.entries[k]
	ps.mu.Unlock()
	if ok && e.cfg == cfg {
		if slices.Equal(e.history, hist) {
			return e.p, nil
		}
		if e.p.Learned() && now.Sub(e.built) < planRefresh {
			return e.p, nil
		}
	}
	p := pollplan.New(cfg, hist)
	ps.mu.Lock()
	if p.Learned() {
		ps.entries[k] = planEntry{cfg: cfg, history: hist, built: now, p: p}
	} else {
		// Too little history to learn from: cheap to make again, and not
		// worth keeping for each of 10,000 targets.
		delete(ps.entries, k)
	}
	ps.mu.Unlock()
	return p, nil
}

// jobPolls is what the driver knows of the current job's polls.
type jobPolls struct {
	planned bool              // planner looked up for this job
	plan    *pollplan.Planner // nil: the seed cadence
	start   time.Time         // the job's kick-off (zero: not yet looked up)
	// known: start is the job's kick-off (this driver's, or the run's only
	// one); adopted: this driver did not see the kick-off.
	known, adopted bool
	running        time.Duration // elapsed at the last poll that saw it running
	silent         time.Duration // elapsed at the last poll before X-Progress showed
	progress       []pollplan.Observation
	// retryAfter is the last running answer's Retry-After (0: none).
	retryAfter time.Duration
}

// startJob resets the observations for a job this driver kicked off at t.
func (dr *driver) startJob(t time.Time) {
	dr.job = jobPolls{start: t, known: true}
}

// jobStart is the current job's kick-off: known when this driver kicked
// it off, or the run's only kick-off for an adopted job; else the first
// poll's time (adopted after a retry: its observations restart).
func (dr *driver) jobStart() time.Time {
	if dr.job.start.IsZero() {
		dr.job.adopted = true
		if dr.run.Attempts <= 1 && !dr.run.FirstKickOff.IsZero() {
			dr.job.start, dr.job.known = dr.run.FirstKickOff, true
		} else {
			dr.job.start = dr.now()
		}
	}
	return dr.job.start
}

// planner returns the current job's planner, nil for the seed cadence.
func (dr *driver) planner(ctx context.Context) *pollplan.Planner {
	if dr.job.planned {
		return dr.job.plan
	}
	dr.job.planned = true
	if dr.plans == nil || dr.t.PollPolicy != PollHistory {
		return nil
	}
	p, err := dr.plans.planner(ctx, dr.t, DurationShape(dr.run.Params), dr.now())
	if err != nil {
		if ctx.Err() == nil {
			dr.log.WarnContext(ctx, "read job duration history; polling at the seed cadence", "error", err)
		}
		return nil
	}
	if p.Learned() {
		dr.job.plan = p
	}
	return dr.job.plan
}

// state is the planner's view of the current job at now.
func (dr *driver) state(now time.Time) pollplan.State {
	return pollplan.State{
		Elapsed:    now.Sub(dr.jobStart()),
		Polls:      dr.polls,
		Progress:   dr.job.progress,
		Silent:     dr.job.silent,
		RetryAfter: dr.job.retryAfter,
	}
}

// nextPollWait is the wait before the next poll of the current job: a
// pending pause (a retry's backoff) as is; else the job's plan; else the
// seed cadence, where a Retry-After replaces the wait within Poll.Max.
func (dr *driver) nextPollWait(ctx context.Context) time.Duration {
	if dr.pause > 0 {
		w := dr.pause
		dr.pause = 0
		return w
	}
	dr.jobStart()
	if p := dr.planner(ctx); p != nil {
		return p.Next(dr.state(dr.now()))
	}
	if ra := dr.job.retryAfter; ra > 0 {
		return min(ra, dr.t.Poll.Max)
	}
	return dr.t.Poll.Next(dr.polls)
}

// sawRunning notes a poll at now that found the job running, and returns
// when the job is expected to end (zero: unknown).
func (dr *driver) sawRunning(ctx context.Context, now time.Time, st JobStatus) time.Time {
	j := &dr.job
	e := now.Sub(dr.jobStart())
	j.running = e
	j.retryAfter = st.RetryAfter
	if pct, ok := parseProgress(st.Progress); ok {
		j.progress = append(j.progress, pollplan.Observation{At: e, Percent: pct})
		if len(j.progress) > maxObservations {
			j.progress = slices.Delete(j.progress, 0, len(j.progress)-maxObservations)
		}
	} else if len(j.progress) == 0 {
		j.silent = e
	}
	p := dr.planner(ctx)
	if p == nil {
		return time.Time{}
	}
	end, ok := p.ExpectedEnd(dr.state(now))
	if !ok {
		return time.Time{}
	}
	return dr.job.start.Add(end)
}

// parseProgress reads an X-Progress such as "42%" (Pathling's form) or
// "42.5 %"; ok is false for anything else.
func parseProgress(s string) (float64, bool) {
	v, found := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !found {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 || f > 100 {
		return 0, false
	}
	return f, true
}

// doneDuration is the current job's duration as its polls saw it when the
// poll at now found it done, and the detection lag that implies (the poll
// came that long after the estimated end); ok is false when the job's
// kick-off is not known to this driver.
func (dr *driver) doneDuration(now time.Time) (d, lag time.Duration, ok bool) {
	j := dr.job
	if !j.known || (j.adopted && j.running == 0) {
		// The kick-off, or the last poll that saw the job running, is
		// another driver's: unknown here.
		return 0, 0, false
	}
	done := now.Sub(j.start)
	d = pollplan.Duration(dr.job.running, done)
	return d, done - d, d > 0
}

// completed ends a job whose poll at now found it done (empty: an empty
// incremental export): the run's outcome is recorded (complete), then the
// job's duration joins its history and its detection lag goes with the
// finished event.
func (dr *driver) completed(ctx context.Context, st JobStatus, empty bool, now time.Time) error {
	d, lag, ok := dr.doneDuration(now)
	if ok && dr.plans != nil && d >= time.Millisecond {
		// Written with the terminal record (finish): no round trip of its own.
		dr.sample = &DurationSample{Shape: DurationShape(dr.run.Params), D: d}
	}
	if err := dr.complete(ctx, st, empty); err != nil {
		return err
	}
	if ok {
		dr.lag = lag
	}
	if s := dr.sample; s != nil {
		if n, isNoter := dr.plans.src.(DurationNoter); isNoter {
			n.NoteDuration(dr.run.Target, s.Shape, s.D)
		}
	}
	return nil
}
