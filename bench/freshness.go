package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"
)

// FreshnessOptions size the freshness scenario.
type FreshnessOptions struct {
	Targets int // per policy: the service gets twice as many
	Warmup  int // syncs per target before measuring (alternating full, incremental)
	Syncs   int // measured syncs per target
	// Compress divides every duration: the jobs' and the service's poll
	// cadence (initial, max, floor) alike, so that a run takes minutes.
	Compress float64
	// Progress: "off", "on" (X-Progress in the last ProgressFrom part of
	// each job) or "both" (a trial each).
	Progress     string
	ProgressFrom float64
}

// freshnessMedians: the targets' full-export medians spread log-evenly over
// 30 s … 10 min (before compression); an incremental job's is 0.4× its
// target's. Sigma 0.3, 5 % outliers at 3×.
const (
	freshMinMedian   = 30 * time.Second
	freshMaxMedian   = 10 * time.Minute
	freshIncrFactor  = 0.4
	freshSigma       = 0.3
	freshOutlierFrac = 0.05
	freshOutlierMul  = 3
)

// runFreshness measures how late a finished Pathling job is seen: the
// stand-in's job end → SyncCompleted seen, and the polls per sync, for the
// history policy and the seed cadence in one service (a target of each
// policy per duration distribution), after a warm-up of a few syncs per
// target; once without X-Progress and once with it in the job's last phase.
func runFreshness(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Freshness
	var modes []bool
	switch o.Progress {
	case "off":
		modes = []bool{false}
	case "on":
		modes = []bool{true}
	default:
		modes = []bool{false, true}
	}
	var out []*Report
	for _, progress := range modes {
		r, err := freshnessTrial(ctx, e, progress)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

type freshSample struct {
	lagMs float64
	polls int
}

func freshnessTrial(ctx context.Context, e *Env, progress bool) (*Report, error) {
	o := e.Opts.Freshness
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) / o.Compress) }
	name := "freshness"
	if progress {
		name += "-progress"
	}
	r := NewReport("freshness")
	r.Params["xProgress"] = progress
	r.Params["targets"], r.Params["warmup"], r.Params["syncs"], r.Params["compress"] = o.Targets, o.Warmup, o.Syncs, o.Compress
	r.Params["jobs"] = fmt.Sprintf("lognormal per target and shape: full medians %s…%s, incremental 0.4×, sigma %g, %g%% outliers ×%d (÷%g)",
		freshMinMedian, freshMaxMedian, freshSigma, 100*freshOutlierFrac, freshOutlierMul, o.Compress)
	if progress {
		r.Params["progressFrom"] = o.ProgressFrom
	}
	r.Params["poll"] = fmt.Sprintf("5s ×1.5 ≤ 60s, floor 1s, jitter 0.1 (÷%g)", o.Compress)

	// Target i of each policy shares distribution i.
	dists := PerShape{}
	var targets []string
	policyOf := map[string]string{}
	for i := range o.Targets {
		f := 0.0
		if o.Targets > 1 {
			f = float64(i) / float64(o.Targets-1)
		}
		median := time.Duration(float64(freshMinMedian) * math.Pow(float64(freshMaxMedian)/float64(freshMinMedian), f))
		full := LogNormal{Median: scale(median), Sigma: freshSigma, OutlierFrac: freshOutlierFrac, OutlierFactor: freshOutlierMul}
		incr := full
		incr.Median = time.Duration(float64(full.Median) * freshIncrFactor)
		for _, pol := range []string{"history", "seed"} {
			t := fmt.Sprintf("%s%03d", pol[:1], i)
			targets = append(targets, t)
			policyOf[t] = pol
			dists[t] = map[string]Durations{"full": full, "incr": incr}
		}
	}

	// Per target: its current job's end and id; polls per job.
	var mu sync.Mutex
	due, jobOf, polls := map[string]time.Time{}, map[string]uint64{}, map[uint64]int{}
	observe := func(ev StandInEvent) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Kind {
		case "kickoff":
			due[ev.Target], jobOf[ev.Target] = ev.Due, ev.Job
		case "poll":
			polls[ev.Job]++
		}
	}
	opts := []StandInOption{WithObserver(observe)}
	if progress {
		opts = append(opts, WithProgress(o.ProgressFrom))
	}
	sc := ServiceConfig{
		PollInitial: scale(5 * time.Second), PollFactor: 1.5, PollMax: scale(time.Minute), PollFloor: scale(time.Second),
		PollPolicy: func(t string) string { return policyOf[t] },
	}
	per := o.Warmup + o.Syncs
	t, err := e.newTrial(ctx, name, targets, len(targets)*per, dists, sc, opts...)
	if err != nil {
		return nil, err
	}
	defer t.close()
	full, incr := requestBody(""), incrementalBody()
	p := t.publisher()
	t.begin(ctx, time.Second)
	// A target's syncs run one after another; targets in parallel.
	timeout := scale(freshMaxMedian)*freshOutlierMul*3 + time.Minute
	samples := map[string][]freshSample{}
	var failed, missing int
	var wg sync.WaitGroup
	for ti, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				i := ti*per + k
				body := full
				if k%2 == 1 {
					body = incr
				}
				p.publish(ctx, i, tg, body)
				if err := waitFor(ctx, timeout, "an outcome", func() bool { return t.outcomes.at[i].Load() != 0 }); err != nil {
					mu.Lock()
					missing++
					mu.Unlock()
					return
				}
				if k < o.Warmup {
					continue
				}
				mu.Lock()
				if t.outcomes.failed[i].Load() {
					failed++
				} else {
					lag := time.Unix(0, t.outcomes.at[i].Load()).Sub(due[tg])
					samples[policyOf[tg]] = append(samples[policyOf[tg]], freshSample{lagMs: float64(lag.Microseconds()) / 1000, polls: polls[jobOf[tg]]})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	c := t.end(ctx)

	stats := func(pol string) (p50, p90, pollsPer float64) {
		ss := samples[pol]
		lags := make([]float64, 0, len(ss))
		n := 0
		for _, s := range ss {
			lags = append(lags, s.lagMs)
			n += s.polls
		}
		sort.Float64s(lags)
		if len(ss) > 0 {
			pollsPer = float64(n) / float64(len(ss))
		}
		return pct(lags, 50), pct(lags, 90), pollsPer
	}
	h50, h90, hp := stats("history")
	s50, s90, sp := stats("seed")
	r.FloorNote = "for the lag and polls figures, the floor column is the seed cadence (poll.policy seed) on the same job durations in the same service, ratio = history ÷ seed (no floorbench run)"
	r.Add(Figure{Name: "lag_p50_ms", Label: "detection lag p50 (job end → SyncCompleted seen)", Unit: "ms", Value: h50, Floor: &s50, LowerIsBetter: true})
	r.Add(Figure{Name: "lag_p90_ms", Label: "detection lag p90", Unit: "ms", Value: h90, Floor: &s90, LowerIsBetter: true})
	r.Add(Figure{Name: "measured_polls_per_sync", Label: "polls per measured sync", Value: hp, Floor: &sp, LowerIsBetter: true})
	r.Add(Figure{Name: "measured", Label: "syncs measured (history + seed)", Value: float64(len(samples["history"]) + len(samples["seed"]))})
	r.Add(Figure{Name: "failed", Label: "SyncFailed among them", Value: float64(failed), LowerIsBetter: true})
	r.Add(Figure{Name: "missing", Label: "requests without an outcome in time", Value: float64(missing), LowerIsBetter: true})
	c.addPerSync(r, t.outcomes.done.Load(), nil)
	return r, nil
}

// incrementalBody is the scenario's incremental request: an explicit since,
// so Pathling (the stand-in) gets _since.
func incrementalBody() []byte {
	b := map[string]any{"saveMode": "merge", "types": []string{"Patient", "Observation"}, "since": "2026-01-01T00:00:00Z"}
	out, _ := json.Marshal(b)
	return out
}
