package pollplan_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers/pollplan"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// lognormal returns n durations around median with sigma 0.3, from a fixed seed.
func lognormal(n int, median time.Duration) []time.Duration {
	rng := rand.New(rand.NewPCG(7, uint64(median)))
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(float64(median) * math.Exp(0.3*rng.NormFloat64()))
	}
	return out
}

// poll is one planned poll of a schedule.
type poll struct {
	at, wait time.Duration
}

// schedule drives p on a fake clock from the kick-off until a poll at or
// after until (or the job's end, when it returns a state change), and
// returns the polls. seen may add what the poll at that time answered.
func schedule(p *pollplan.Planner, until time.Duration, seen func(s *pollplan.State)) []poll {
	clock := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	kickoff := clock.Now()
	var s pollplan.State
	var out []poll
	for clock.Now().Sub(kickoff) < until {
		s.Elapsed = clock.Now().Sub(kickoff)
		w := p.Next(s)
		clock.Advance(w)
		s.Elapsed = clock.Now().Sub(kickoff)
		s.Polls++
		out = append(out, poll{at: s.Elapsed, wait: w})
		if seen != nil {
			seen(&s)
		}
		if len(out) > 10000 {
			panic("poll storm")
		}
	}
	return out
}

func render(ps []poll) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, " %.1f(+%.1f)", p.at.Seconds(), p.wait.Seconds())
	}
	return b.String()
}

func seedWaits(n int) []time.Duration {
	out := make([]time.Duration, n)
	d := 5 * time.Second
	for i := range out {
		out[i] = min(d, time.Minute)
		d = time.Duration(float64(d) * 1.5)
	}
	return out
}

// No history, or too little of it: exactly the seed cadence, whatever
// X-Progress says; and no expected end.
func TestSeedCadenceWithoutHistory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []time.Duration
	}{
		{"no history", nil},
		{"two samples", []time.Duration{time.Minute, 70 * time.Second}},
		{"three, one of them unusable", []time.Duration{time.Minute, 0, 70 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pollplan.New(pollplan.Config{}, tc.history)
			if p.Learned() {
				t.Fatal("learned")
			}
			want := seedWaits(12)
			got := schedule(p, 10*time.Minute, func(s *pollplan.State) {
				s.Progress = append(s.Progress, pollplan.Observation{At: s.Elapsed, Percent: float64(s.Polls)})
			})
			t.Logf("plan:%s", render(got))
			for i, w := range want {
				if got[i].wait != w {
					t.Fatalf("wait %d = %s, want %s (seed)", i, got[i].wait, w)
				}
			}
			if _, ok := p.ExpectedEnd(pollplan.State{Elapsed: time.Minute}); ok {
				t.Error("an expected end without history or progress")
			}
		})
	}
}

// A learned distribution (64 jobs around 2 min): the first poll as the
// seed's, sparse while the end is unlikely, dense around the median, every
// wait within [floor, cap]; the expected end follows the history.
func TestLearnedPlan(t *testing.T) {
	p := pollplan.New(pollplan.Config{}, lognormal(64, 2*time.Minute))
	if !p.Learned() {
		t.Fatal("not learned")
	}
	ps := schedule(p, 4*time.Minute, nil)
	t.Logf("plan:%s", render(ps))
	if ps[0].at != 5*time.Second {
		t.Errorf("first poll at %s, want 5s", ps[0].at)
	}
	var early, middle time.Duration // the longest wait before 60 s, the longest around the median
	for _, q := range ps {
		if q.wait < time.Second || q.wait > time.Minute {
			t.Errorf("wait %s at %s outside [1s, 60s]", q.wait, q.at)
		}
		switch {
		case q.at < time.Minute:
			early = max(early, q.wait)
		case q.at >= 100*time.Second && q.at <= 140*time.Second:
			middle = max(middle, q.wait)
		}
	}
	if early < 30*time.Second || middle > 10*time.Second {
		t.Errorf("longest waits: %s early, %s around the median: want sparse, then dense", early, middle)
	}
	end, ok := p.ExpectedEnd(pollplan.State{})
	if !ok || end < 110*time.Second || end > 130*time.Second {
		t.Errorf("expected end at the kick-off: %s %v, want about 2m", end, ok)
	}
	if later, ok := p.ExpectedEnd(pollplan.State{Elapsed: 130 * time.Second}); !ok || later <= 130*time.Second {
		t.Errorf("expected end at 130s: %s %v", later, ok)
	}
}

// A job that outlives its history: the cadence grows again from the floor
// (×1.5) up to the cap, with no storm and no wait beyond the cap; the
// expected end is unknown then.
func TestLongerThanHistory(t *testing.T) {
	p := pollplan.New(pollplan.Config{}, lognormal(64, time.Minute))
	ps := schedule(p, 15*time.Minute, nil)
	t.Logf("plan:%s", render(ps))
	// The fallback starts with the first wait of a floor.
	start := -1
	for i, q := range ps {
		if q.wait == time.Second {
			start = i
			break
		}
	}
	if start < 0 || ps[start].at < 90*time.Second || ps[start].at > 3*time.Minute {
		t.Fatalf("no fallback from the floor where the history (about 1 min, ≤ 3×) ends")
	}
	after := ps[start:]
	for i := 1; i < len(after); i++ {
		if after[i].wait < after[i-1].wait || after[i].wait > time.Minute {
			t.Fatalf("waits past the history not growing to the cap: %s", render(after))
		}
	}
	if last := after[len(after)-1].wait; last != time.Minute {
		t.Errorf("last wait %s, want the cap", last)
	}
	if n := len(after); n > 25 {
		t.Errorf("%d polls in the 13 minutes past the history", n)
	}
	if _, ok := p.ExpectedEnd(pollplan.State{Elapsed: 10 * time.Minute}); ok {
		t.Error("an expected end past the history")
	}
}

// X-Progress gives the end: a job whose import phase runs from 3 min to
// 6 min 20 s is seen within a couple of seconds of its end, and the
// expected end is known once two values were seen.
func TestProgress(t *testing.T) {
	p := pollplan.New(pollplan.Config{}, lognormal(64, 5*time.Minute))
	phase, end := 180*time.Second, 380*time.Second
	var estimates []time.Duration
	ps := schedule(p, end, func(s *pollplan.State) {
		if s.Elapsed < phase || s.Elapsed >= end {
			if len(s.Progress) == 0 {
				s.Silent = s.Elapsed
			}
			return
		}
		pct := math.Floor(100 * float64(s.Elapsed-phase) / float64(end-phase))
		s.Progress = append(s.Progress, pollplan.Observation{At: s.Elapsed, Percent: pct})
		if e, ok := p.ExpectedEnd(*s); ok && len(s.Progress) >= 2 {
			estimates = append(estimates, e)
		}
	})
	t.Logf("plan:%s; expected ends %v", render(ps), estimates)
	if lag := ps[len(ps)-1].at - end; lag > 2*time.Second {
		t.Errorf("seen %s late", lag)
	}
	if len(estimates) == 0 {
		t.Fatal("no estimate from two progress values")
	}
	for _, e := range estimates {
		if d := e - end; d < -10*time.Second || d > 10*time.Second {
			t.Errorf("expected end %s, the job ends at %s", e, end)
		}
	}
	for _, q := range ps {
		if q.wait < time.Second || q.wait > time.Minute {
			t.Errorf("wait %s outside [1s, 60s]", q.wait)
		}
	}
}

// Retry-After: the next wait is at least what the server asked, within the
// cap, with or without history.
func TestRetryAfter(t *testing.T) {
	learned := pollplan.New(pollplan.Config{}, lognormal(64, 2*time.Minute))
	seed := pollplan.New(pollplan.Config{}, nil)
	near := pollplan.State{Elapsed: 2 * time.Minute, Polls: 8}
	if w := learned.Next(near); w > 10*time.Second {
		t.Fatalf("planned wait near the median %s", w)
	}
	for _, tc := range []struct {
		name  string
		p     *pollplan.Planner
		s     pollplan.State
		after time.Duration
		want  time.Duration
	}{
		{"learned, asked 20s", learned, near, 20 * time.Second, 20 * time.Second},
		{"learned, asked 5min", learned, near, 5 * time.Minute, time.Minute},
		{"seed, asked 30s", seed, pollplan.State{}, 30 * time.Second, 30 * time.Second},
		{"seed, asked less than planned", seed, pollplan.State{Polls: 3}, time.Second, seedWaits(4)[3]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.RetryAfter = tc.after
			if got := tc.p.Next(tc.s); got != tc.want {
				t.Errorf("Next = %s, want %s", got, tc.want)
			}
		})
	}
}

// The plan scales with its parameters: a hundred times faster durations,
// initial wait, cap and floor give a hundred times shorter waits.
func TestScaleFree(t *testing.T) {
	hist := lognormal(64, 3*time.Minute)
	fast := make([]time.Duration, len(hist))
	for i, d := range hist {
		fast[i] = d / 100
	}
	slow := schedule(pollplan.New(pollplan.Config{}, hist), 6*time.Minute, nil)
	quick := schedule(pollplan.New(pollplan.Config{Initial: 50 * time.Millisecond, Cap: 600 * time.Millisecond, Floor: 10 * time.Millisecond}, fast), 3600*time.Millisecond, nil)
	if len(slow) != len(quick) {
		t.Fatalf("%d polls vs %d scaled:\n%s\n%s", len(slow), len(quick), render(slow), render(quick))
	}
	for i := range slow {
		if d := slow[i].at - 100*quick[i].at; d < -100*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("poll %d at %s vs %s×100", i, slow[i].at, quick[i].at)
		}
	}
}

// New runs once per job (from a cached history): it should stay in the
// low milliseconds.
func BenchmarkNew(b *testing.B) {
	hist := lognormal(64, 5*time.Minute)
	for b.Loop() {
		pollplan.New(pollplan.Config{}, hist)
	}
}

func BenchmarkNext(b *testing.B) {
	p := pollplan.New(pollplan.Config{}, lognormal(64, 5*time.Minute))
	s := pollplan.State{Elapsed: 4 * time.Minute, Polls: 6}
	for b.Loop() {
		p.Next(s)
	}
}
