// Package pollplan plans the status polls of one Pathling import job from
// how long the target's past jobs of the same shape took. It does no I/O and
// reads no clock: the caller says how long the job has run and what the
// polls so far answered, and gets the wait until the next poll.
//
// The policy, in short:
//
//   - Too little history (fewer than Config.MinSamples durations): exactly
//     the seed cadence, Initial × Factor^polls capped at Cap, X-Progress or
//     not (only Retry-After still lengthens a wait).
//   - With history: the durations are smoothed into a distribution (a
//     kernel density on their logarithms) and polls are spread with a
//     density proportional to the square root of its hazard rate (the
//     chance the job ends in the next second, given it has not yet), which
//     minimises the expected detection lag for a given expected number of
//     polls. The factor is calibrated once per history so that the
//     expected polls per job are Config.Budget times the seed cadence's
//     over the same distribution. Every wait lies in [Floor, Cap]; the first
//     poll still comes after Initial, so a kick-off that failed at once is
//     seen as early as before.
//   - A job that outlives its history (the smoothed survival drops under
//     half a sample, or 5 %): one poll there, then a growing cadence again,
//     from Floor, ×Factor, capped at Cap, counted from that moment.
//   - X-Progress: the observed percentages give a rate and so an expected
//     end (a least-squares line through them, reaching 100 %); polls go
//     sparse (≤ Cap) until shortly before it, then dense (half the
//     estimate's uncertainty), then grow from Floor if the job overruns it.
//     After the first value alone, the next poll comes halfway to the end
//     it suggests (the phase began between the last silent poll and it),
//     to read the rate.
//   - Retry-After: the next wait is at least what the server asked, within
//     Cap (the driver's rule).
//
// Times are durations since the kick-off, so the planner works at any time
// scale: a compressed-time benchmark scales Initial, Cap and Floor with the
// job durations.
package pollplan

import (
	"math"
	"slices"
	"sort"
	"time"
)

// Defaults of Config.
const (
	DefaultInitial    = 5 * time.Second
	DefaultFactor     = 1.5
	DefaultCap        = time.Minute
	DefaultFloor      = time.Second
	DefaultMinSamples = 3
	DefaultBudget     = 1.25
)

// Config is the cadence a planner works within. Zero fields take the
// defaults: the seed cadence (5 s ×1.5 ≤ 60 s), a floor of 1 s, 3 samples
// before history is trusted, 1.25× the seed cadence's polls.
type Config struct {
	Initial    time.Duration // seed cadence: the first wait
	Factor     float64       // seed cadence: growth of each wait (≥ 1)
	Cap        time.Duration // no wait is longer (the seed cadence's cap)
	Floor      time.Duration // no planned wait is shorter
	MinSamples int           // fewer durations than this: the seed cadence
	// Budget bounds the expected polls per job of a learned plan, as a
	// multiple of the seed cadence's over the same durations.
	Budget float64
}

func (c *Config) setDefaults() {
	if c.Initial <= 0 {
		c.Initial = DefaultInitial
	}
	if c.Factor < 1 {
		c.Factor = DefaultFactor
	}
	if c.Cap <= 0 {
		c.Cap = DefaultCap
	}
	if c.Cap < c.Initial {
		c.Cap = c.Initial
	}
	if c.Floor <= 0 {
		c.Floor = DefaultFloor
	}
	if c.Floor > c.Cap {
		c.Floor = c.Cap
	}
	if c.MinSamples <= 0 {
		c.MinSamples = DefaultMinSamples
	}
	if c.Budget <= 0 {
		c.Budget = DefaultBudget
	}
}

// Seed returns the seed cadence's n-th wait (n from 0): Initial × Factor^n,
// capped at Cap.
func (c Config) Seed(n int) time.Duration {
	c.setDefaults()
	d := float64(c.Initial)
	for i := 0; i < n && d < float64(c.Cap); i++ {
		d *= c.Factor
	}
	return time.Duration(min(d, float64(c.Cap)))
}

// Observation is one X-Progress a poll of the job saw.
type Observation struct {
	At      time.Duration // since the kick-off
	Percent float64       // 0..100
}

// State is what the caller knows of a running job when it asks for the
// next wait.
type State struct {
	Elapsed time.Duration // since the kick-off, now
	Polls   int           // polls of this job so far
	// Progress holds the X-Progress values seen, oldest first; Silent is
	// the time of the last poll that showed none before the first of them
	// (0: none), which bounds when the progressing phase began.
	Progress   []Observation
	Silent     time.Duration
	RetryAfter time.Duration // the last answer's Retry-After; 0 when absent
}

// hazardPower shapes the poll density: rate ∝ hazard^power.
var hazardPower = 0.5

// gridPoints is the resolution of the learned plan over the history's span.
const gridPoints = 1024

// Planner plans the polls of jobs of one (target, shape). It is immutable
// and safe for concurrent use; build one per history.
type Planner struct {
	cfg     Config
	learned bool
	// The learned plan on a grid t_j = j·dt, j = 0..len(cum)-1, up to end:
	// cum is the planned number of polls up to t_j (nondecreasing), surv
	// the smoothed survival P(duration > t_j).
	dt   float64 // seconds
	end  float64 // seconds: the history's end, where the fallback starts
	cum  []float64
	surv []float64
}

// New returns the planner for a history of job durations (any order;
// non-positive ones are ignored).
func New(cfg Config, history []time.Duration) *Planner {
	cfg.setDefaults()
	p := &Planner{cfg: cfg}
	logs := make([]float64, 0, len(history))
	for _, d := range history {
		if d > 0 {
			logs = append(logs, math.Log(d.Seconds()))
		}
	}
	if len(logs) < cfg.MinSamples {
		return p
	}
	p.learn(logs)
	return p
}

// Learned reports whether the planner plans from history (false: the seed
// cadence).
func (p *Planner) Learned() bool { return p.learned }

// Config returns the planner's configuration, defaults applied.
func (p *Planner) Config() Config { return p.cfg }

// learn builds the plan from the logarithms of the durations (seconds).
func (p *Planner) learn(logs []float64) {
	slices.Sort(logs)
	n := float64(len(logs))
	bw := bandwidth(logs)
	surv := func(t float64) float64 {
		if t <= 0 {
			return 1
		}
		lt := math.Log(t)
		s := 0.0
		for _, x := range logs {
			// Far from a sample its kernel is all or nothing: skip Erfc.
			switch z := (lt - x) / (bw * math.Sqrt2); {
			case z > 5:
			case z < -5:
				s++
			default:
				s += 0.5 * math.Erfc(z)
			}
		}
		return s / n
	}
	// The history ends where less than half a sample (at most 5 %) is left.
	tail := min(0.5/n, 0.05)
	top := math.Exp(logs[len(logs)-1] + 4*bw)
	dt := top / gridPoints
	sv := make([]float64, 0, gridPoints+1)
	for j := 0; j <= gridPoints; j++ {
		s := surv(float64(j) * dt)
		sv = append(sv, s)
		if s <= tail {
			break
		}
	}
	p.dt, p.surv = dt, sv
	p.end = float64(len(sv)-1) * dt
	// Hazard per grid cell, from the survival's drop over the cell.
	hz := make([]float64, len(sv)-1)
	for j := range hz {
		if sv[j] > 0 {
			hz[j] = max(0, sv[j]-sv[j+1]) / (sv[j] * dt)
		}
	}
	floor, cap := p.cfg.Floor.Seconds(), p.cfg.Cap.Seconds()
	// One buffer for every trial of the bisection (cum[0] stays 0): a build
	// is ~1,000 floats, 29 of them per plan.
	// The hazards' powers do not depend on the factor: computed once.
	cum := make([]float64, len(sv))
	hp := make([]float64, len(hz))
	for j, h := range hz {
		hp[j] = math.Pow(h, hazardPower)
	}
	build := func(k float64) []float64 {
		for j, h := range hp {
			rate := min(max(k*h, 1/cap), 1/floor)
			cum[j+1] = cum[j] + rate*dt
		}
		return cum
	}
	seed := p.expectedPolls(func(t float64, n int) float64 { return p.cfg.Seed(n).Seconds() })
	target := p.cfg.Budget * seed
	// Bisect the factor on a log scale: polls grow with it.
	lo, hi := 1e-6, 1e6
	p.learned = true
	// 28 halvings of 28 nats: the factor to a millionth.
	for range 28 {
		mid := math.Sqrt(lo * hi)
		p.cum = build(mid)
		if p.expectedPolls(p.learnedNext) > target {
			hi = mid
		} else {
			lo = mid
		}
	}
	p.cum = build(lo)
}

// bandwidth is Silverman's rule on the log durations, robust to outliers
// (the smaller of the deviation and the spread of the middle half), kept
// within [0.05, 0.5] so a handful of identical samples still leaves room
// and a wild one does not flatten the plan.
func bandwidth(logs []float64) float64 {
	n := float64(len(logs))
	mean := 0.0
	for _, x := range logs {
		mean += x
	}
	mean /= n
	v := 0.0
	for _, x := range logs {
		v += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(v / math.Max(n-1, 1))
	spread := sd
	if iqr := (quantile(logs, 0.75) - quantile(logs, 0.25)) / 1.349; iqr > 0 && iqr < sd {
		spread = iqr
	}
	return min(max(0.9*spread*math.Pow(n, -0.2), 0.05), 0.5)
}

// quantile of sorted values, interpolated.
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

// survival is the smoothed P(duration > t), t in seconds; 0 past the grid.
func (p *Planner) survival(t float64) float64 {
	if t <= 0 {
		return 1
	}
	j := int(t / p.dt)
	if j+1 >= len(p.surv) {
		return 0
	}
	f := t/p.dt - float64(j)
	return p.surv[j] + f*(p.surv[j+1]-p.surv[j])
}

// expectedPolls is E[polls of a job] under the history's distribution
// when the poll after elapsed t and n polls comes next(t, n) seconds later:
// poll n+1 happens when the job outlived poll n.
func (p *Planner) expectedPolls(next func(t float64, n int) float64) float64 {
	e, t := 0.0, 0.0
	for n := 0; ; n++ {
		s := p.survival(t)
		if s < 1e-6 {
			return e
		}
		e += s
		t += next(t, n)
	}
}

// Next returns how long to wait before the next poll of a job in state s.
func (p *Planner) Next(s State) time.Duration {
	var d time.Duration
	switch {
	case !p.learned:
		d = p.cfg.Seed(s.Polls)
	default:
		e := s.Elapsed.Seconds()
		if end, spread, ok := progressEnd(s); ok {
			d = seconds(p.progressNext(e, end, spread, s))
		} else {
			d = seconds(p.learnedNext(e, s.Polls))
		}
		d = min(max(d, p.cfg.Floor), p.cfg.Cap)
	}
	if s.RetryAfter > 0 {
		d = max(d, min(s.RetryAfter, p.cfg.Cap))
	}
	return d
}

// learnedNext is the history plan's wait (seconds) at elapsed e after n polls.
func (p *Planner) learnedNext(e float64, n int) float64 {
	floor := p.cfg.Floor.Seconds()
	if n == 0 && e < p.cfg.Initial.Seconds() {
		// The first poll no later than the seed's: quick failures show early.
		return max(min(p.cfg.Initial.Seconds(), p.at(1))-e, floor)
	}
	if e >= p.end {
		return p.growFrom(p.end, e)
	}
	want := p.count(e) + 1
	if last := p.cum[len(p.cum)-1]; want > last {
		// The plan runs out before another poll's worth: poll where the
		// history ends, then the fallback takes over.
		return max(p.end-e, floor)
	}
	return max(p.at(want)-e, floor)
}

// count is the plan's polls up to t (seconds), interpolated.
func (p *Planner) count(t float64) float64 {
	j := int(t / p.dt)
	if j+1 >= len(p.cum) {
		return p.cum[len(p.cum)-1]
	}
	f := t/p.dt - float64(j)
	return p.cum[j] + f*(p.cum[j+1]-p.cum[j])
}

// at is the time (seconds) where the plan's count reaches c (c ≤ the last).
func (p *Planner) at(c float64) float64 {
	j := sort.SearchFloat64s(p.cum, c) // first cum[j] ≥ c
	if j == 0 {
		return 0
	}
	if j >= len(p.cum) {
		return p.end
	}
	lo, hi := p.cum[j-1], p.cum[j]
	return (float64(j-1) + (c-lo)/(hi-lo)) * p.dt
}

// growFrom is the fallback's wait (seconds) at e: polls at from + Floor ×
// (1 + Factor + Factor² + …), each wait capped at Cap.
func (p *Planner) growFrom(from, e float64) float64 {
	floor, cap, f := p.cfg.Floor.Seconds(), p.cfg.Cap.Seconds(), p.cfg.Factor
	// The first point at least a floor after e: a poll that landed a hair
	// before a point (rounding) must not be followed by a floor-long wait.
	next := e + floor
	t, w := from, floor
	for t < next {
		if w >= cap {
			// Constant from here on: jump to the first step not before next.
			t += math.Ceil((next-t)/cap) * cap
			break
		}
		t += w
		w = min(w*f, cap)
	}
	return t - e
}

// progressEnd estimates when a progressing job ends (seconds since the
// kick-off) and how far that may be off, from its X-Progress values.
func progressEnd(s State) (end, spread float64, ok bool) {
	obs := s.Progress
	switch {
	case len(obs) == 0:
		return 0, 0, false
	case len(obs) == 1 || obs[len(obs)-1].At <= obs[0].At || obs[len(obs)-1].Percent <= obs[0].Percent:
		// One value: the phase began between the last silent poll and it.
		o := obs[len(obs)-1]
		if o.Percent <= 0 || o.Percent >= 100 {
			return 0, 0, false
		}
		t1, t0 := o.At.Seconds(), s.Silent.Seconds()
		if t0 > t1 {
			t0 = 0
		}
		begin := (t0 + t1) / 2
		end = begin + (t1-begin)*100/o.Percent
		// Anywhere from at once to the end of a phase begun at t0.
		latest := t0 + (t1-t0)*100/o.Percent
		return end, max(end-t1, latest-end), true
	}
	// Least squares of percent on time.
	var st, sp, stt, stp float64
	for _, o := range obs {
		t := o.At.Seconds()
		st += t
		sp += o.Percent
		stt += t * t
		stp += t * o.Percent
	}
	n := float64(len(obs))
	den := n*stt - st*st
	if den <= 0 {
		return 0, 0, false
	}
	rate := (n*stp - st*sp) / den // percent per second
	if rate <= 0 {
		return 0, 0, false
	}
	a := (sp - rate*st) / n
	end = (100 - a) / rate
	last := obs[len(obs)-1]
	// Values are whole percent: each end of the span may be off by one.
	span := last.Percent - obs[0].Percent
	spread = 1/rate + (end-obs[0].At.Seconds())*2/span
	return max(end, last.At.Seconds()), spread, true
}

// progressNext is the wait (seconds) at e for a job expected to end at end
// ± spread: sparse until shortly before, then dense, then growing.
func (p *Planner) progressNext(e, end, spread float64, s State) float64 {
	floor := p.cfg.Floor.Seconds()
	if len(s.Progress) == 1 {
		// Take a second reading halfway to the expected end: it fixes the rate.
		return max(min((end-e)/2, p.learnedNext(e, s.Polls)), floor)
	}
	from := end - spread
	switch {
	case e < from:
		return max(from-e, floor)
	case e < end+spread:
		return max(spread/2, floor)
	default:
		return p.growFrom(end+spread, e)
	}
}

// ExpectedEnd returns when the job is expected to end, as time since the
// kick-off: from X-Progress when it has been seen, else the median of the
// history's durations longer than the elapsed time. ok is false when
// neither tells (no history, or the job outlived it).
func (p *Planner) ExpectedEnd(s State) (time.Duration, bool) {
	if end, _, ok := progressEnd(s); ok {
		return seconds(end), true
	}
	if !p.learned {
		return 0, false
	}
	e := s.Elapsed.Seconds()
	left := p.survival(e)
	if e >= p.end || left <= 0 {
		return 0, false
	}
	// The survival halves again at the conditional median.
	half := left / 2
	j := sort.Search(len(p.surv), func(j int) bool { return p.surv[j] <= half })
	if j >= len(p.surv) {
		return seconds(p.end), true
	}
	return seconds(max(float64(j)*p.dt, e)), true
}

// Duration is the duration to record for a job seen done by the poll at
// done whose previous poll, at running, saw it still running (both since the
// kick-off): halfway between them, the unbiased guess when nothing else
// tells when it ended.
func Duration(running, done time.Duration) time.Duration {
	return running + (done-running)/2
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
