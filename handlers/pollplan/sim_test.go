package pollplan_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers/pollplan"
)

// job is one simulated Pathling import: it ends at end; from phase on it
// shows X-Progress, rising linearly, whole percent, never 100 %.
type job struct {
	end, phase time.Duration
}

func (j job) progress(at time.Duration) (float64, bool) {
	if at < j.phase {
		return 0, false
	}
	return min(math.Floor(100*float64(at-j.phase)/float64(j.end-j.phase)), 99), true
}

// drawJob follows issue 12's scenario: lognormal around the median, sigma
// 0.3, 5 % outliers at 3×; the progressing (import) phase is the last 20–50 %.
func drawJob(rng *rand.Rand, median time.Duration) job {
	d := float64(median) * math.Exp(0.3*rng.NormFloat64())
	if rng.Float64() < 0.05 {
		d *= 3
	}
	frac := 0.2 + 0.3*rng.Float64()
	return job{end: time.Duration(d), phase: time.Duration(d * (1 - frac))}
}

// run polls j as p plans it; it returns the detection lag, the polls and
// the duration the driver can record: halfway between the last poll that
// saw the job running and the one that saw it done.
func run(p *pollplan.Planner, j job, withProgress bool) (lag time.Duration, polls int, seen time.Duration) {
	var s pollplan.State
	for {
		last := s.Elapsed
		s.Elapsed += p.Next(s)
		s.Polls++
		if s.Elapsed >= j.end {
			return s.Elapsed - j.end, s.Polls, pollplan.Duration(last, s.Elapsed)
		}
		if pct, ok := j.progress(s.Elapsed); ok && withProgress {
			s.Progress = append(s.Progress, pollplan.Observation{At: s.Elapsed, Percent: pct})
		} else if len(s.Progress) == 0 {
			s.Silent = s.Elapsed
		}
		if s.Polls > 100000 {
			panic("poll storm")
		}
	}
}

// figures of one policy over many jobs.
type figures struct {
	lags  []time.Duration
	polls int
}

func (f *figures) add(lag time.Duration, polls int) {
	f.lags = append(f.lags, lag)
	f.polls += polls
}

func (f *figures) pct(q float64) time.Duration {
	s := slices.Clone(f.lags)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func (f *figures) pollsPerJob() float64 { return float64(f.polls) / float64(len(f.lags)) }

type ratios struct{ p50, p90, polls float64 }

func compare(plan, seed *figures) ratios {
	return ratios{
		p50:   plan.pct(0.5).Seconds() / seed.pct(0.5).Seconds(),
		p90:   plan.pct(0.9).Seconds() / seed.pct(0.9).Seconds(),
		polls: plan.pollsPerJob() / seed.pollsPerJob(),
	}
}

// simulate runs targets×jobs syncs per median: each target learns from its
// own last 64 durations, and the first warmup syncs of each target (too
// little history) are not measured. The same jobs are polled by the seed
// cadence for comparison.
func simulate(t *testing.T, cfg pollplan.Config, medians []time.Duration, withProgress bool) (pooled ratios, per []ratios) {
	t.Helper()
	const targets, jobs, warmup, keep = 30, 25, 3, 64
	rng := rand.New(rand.NewPCG(12, 2026))
	seedPlanner := pollplan.New(cfg, nil)
	var allPlan, allSeed figures
	for _, m := range medians {
		var plan, seed figures
		for range targets {
			var history []time.Duration
			for i := range jobs {
				j := drawJob(rng, m)
				p := pollplan.New(cfg, history)
				lag, n, seen := run(p, j, withProgress)
				if i >= warmup {
					if !p.Learned() {
						t.Fatalf("median %s: %d samples not learned", m, len(history))
					}
					plan.add(lag, n)
					allPlan.add(lag, n)
					lag, n, _ = run(seedPlanner, j, withProgress)
					seed.add(lag, n)
					allSeed.add(lag, n)
				}
				// What the service learns: the duration as its polls saw it.
				history = append(history, seen)
				if len(history) > keep {
					history = history[1:]
				}
			}
		}
		r := compare(&plan, &seed)
		t.Logf("median %5s: lag p50 %6.2fs vs %6.2fs (%.2f×), p90 %6.2fs vs %6.2fs (%.2f×), polls %5.2f vs %5.2f (%.2f×)",
			m, plan.pct(0.5).Seconds(), seed.pct(0.5).Seconds(), r.p50,
			plan.pct(0.9).Seconds(), seed.pct(0.9).Seconds(), r.p90,
			plan.pollsPerJob(), seed.pollsPerJob(), r.polls)
		per = append(per, r)
	}
	pooled = compare(&allPlan, &allSeed)
	t.Logf("pooled: lag p50 %.2f×, p90 %.2f×, polls %.2f× (%d jobs)", pooled.p50, pooled.p90, pooled.polls, len(allPlan.lags))
	return pooled, per
}

var medians = []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute}

// Issue 12's goals, with margin, for the planner against the seed cadence
// on the same simulated jobs, pooled over targets whose medians spread from
// 30 s to 10 min as in the benchmark's scenario: without X-Progress p50 lag
// ≤ 0.3× (asserted ≤ 0.27×), p90 ≤ 0.5× (≤ 0.45×), polls ≤ 1.5× (≤ 1.45×);
// with X-Progress p50 ≤ 0.15× (≤ 0.13×, at every median too). A target
// whose jobs take 10 min alone reaches about 0.45× at p50: the first 7 min
// of its jobs cost a poll a minute (the cap) whatever the plan.
func TestSimulatedGoals(t *testing.T) {
	cfg := pollplan.Config{}
	t.Run("without X-Progress", func(t *testing.T) {
		pooled, per := simulate(t, cfg, medians, false)
		if pooled.p50 > 0.27 || pooled.p90 > 0.45 || pooled.polls > 1.45 {
			t.Errorf("pooled figures miss the goals: %+v", pooled)
		}
		// Per median, the polls stay within the goal's budget everywhere.
		for i, r := range per {
			if r.polls > 1.5 {
				t.Errorf("median %s polls %.2f× the seed's", medians[i], r.polls)
			}
		}
	})
	t.Run("with X-Progress", func(t *testing.T) {
		pooled, per := simulate(t, cfg, medians, true)
		for i, r := range append(per, pooled) {
			if r.p50 > 0.13 || r.polls > 1.5 {
				t.Errorf("case %d misses the goals: %+v", i, r)
			}
		}
	})
}
