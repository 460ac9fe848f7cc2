package handlers_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/handlers/pollplan"
)

// jumpClock is a clock whose waits take no time: After(d) moves it d ahead
// and delivers at once. A run driven on it polls at exactly the times its
// plan says, however loaded the machine.
type jumpClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *jumpClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(max(d, 0))
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// clockedPathling is a Pathling whose one job at a time ends dur after its
// kick-off by clk, showing X-Progress in its last progressFrom fraction
// (0: never). It notes when each poll came, since the kick-off.
type clockedPathling struct {
	clk          *jumpClock
	progressFrom float64

	mu    sync.Mutex
	dur   time.Duration
	start time.Time
	polls []time.Duration
	seen  time.Duration // when a poll first saw the job done, since the kick-off
}

func (p *clockedPathling) job(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dur, p.polls, p.seen = d, nil, 0
}

func (p *clockedPathling) KickOff(context.Context, handlers.ImportParams) (handlers.KickedOff, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start = p.clk.Now()
	return handlers.KickedOff{StatusURL: "http://pathling.test/fhir/$job?id=" + strconv.FormatInt(p.start.UnixNano(), 10)}, nil
}

func (p *clockedPathling) Status(context.Context, string) (handlers.JobStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.clk.Now().Sub(p.start)
	p.polls = append(p.polls, e)
	if e >= p.dur {
		if p.seen == 0 {
			p.seen = e
		}
		return handlers.JobStatus{State: handlers.JobDone, TransactionTime: "2026-01-01T00:00:00.000+00:00", Outputs: 1}, nil
	}
	st := handlers.JobStatus{State: handlers.JobRunning}
	if f := e.Seconds() / p.dur.Seconds(); p.progressFrom > 0 && f >= p.progressFrom {
		st.Progress = strconv.Itoa(int(100*(f-p.progressFrom)/(1-p.progressFrom))) + "%"
	}
	return st, nil
}

func (p *clockedPathling) Delete(context.Context, string) error { return nil }

func (p *clockedPathling) NormalizeExportURL(raw string) (string, error) { return raw, nil }

// lagObserver keeps the detection lag of each finished run.
type lagObserver struct {
	mu   sync.Mutex
	lags []time.Duration
	ends int // polled events with an expected end
}

func (o *lagObserver) RunEvent(_ context.Context, ev handlers.RunEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch ev.Kind {
	case handlers.EventFinished:
		o.lags = append(o.lags, ev.DetectionLag)
	case handlers.EventPolled:
		if !ev.ExpectedEnd.IsZero() {
			o.ends++
		}
	}
}

type pollRun struct {
	polls int
	lag   time.Duration // seen done − real end
	at    []time.Duration
}

// pollingWorld is a Syncer on a jump clock driving clockedPathling jobs of
// target t1 (seed cadence 5 s ×1.5 ≤ 60 s, no jitter, floor 1 s), its
// durations in the env's Redis behind a DurationCache.
type pollingWorld struct {
	e     *env
	clk   *jumpClock
	p     *clockedPathling
	s     *handlers.Syncer
	obs   *lagObserver
	shape string
	n     int
}

func newPollingWorld(t *testing.T, policy string, progressFrom float64) *pollingWorld {
	e := newEnv(t, envOptions{})
	clk := &jumpClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	p := &clockedPathling{clk: clk, progressFrom: progressFrom}
	tg := e.target(func(tg *handlers.Target) {
		tg.Pathling = p
		tg.Timeout = 2 * time.Hour
		tg.Poll = handlers.Backoff{Initial: 5 * time.Second, Factor: 1.5, Max: time.Minute}
		tg.PollPolicy = policy
	})
	obs := &lagObserver{}
	ports := e.ports(e.store)
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{tg}, Subjects: e.subjects, LockTTL: time.Minute,
		Clock: clk, Observer: obs, Durations: redisstore.NewDurationCache(e.store, 0, clk),
	}, ports)
	if err != nil {
		t.Fatal(err)
	}
	return &pollingWorld{e: e, clk: clk, p: p, s: s, obs: obs, shape: handlers.DurationShape(handlers.ImportParams{})}
}

// sync runs one request whose job takes d, to its outcome.
func (w *pollingWorld) sync(t *testing.T, d time.Duration) pollRun {
	t.Helper()
	w.n++
	w.p.job(d)
	id := fmt.Sprintf("req-%d", w.n)
	disp := w.s.Handle(context.Background(), w.e.delivery("t1", id, map[string]any{}, uint64(w.n)))
	if disp.Action != handlers.Ack {
		t.Fatalf("%s: disposition %v, want ack", id, disp.Action)
	}
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.seen == 0 {
		t.Fatalf("%s: no poll saw the job done", id)
	}
	return pollRun{polls: len(w.p.polls), lag: w.p.seen - d, at: append([]time.Duration(nil), w.p.polls...)}
}

// history records durations around median (lognormal quantiles, sigma 0.1).
func (w *pollingWorld) history(t *testing.T, median time.Duration, n int) {
	t.Helper()
	for i := range n {
		// Evenly spread normal quantiles, by a logistic approximation.
		q := (float64(i) + 0.5) / float64(n)
		z := math.Log(q/(1-q)) / 1.702
		d := time.Duration(float64(median) * math.Exp(0.1*z))
		if err := w.e.store.RecordDuration(context.Background(), "t1", w.shape, d); err != nil {
			t.Fatal(err)
		}
	}
}

// jobs are the durations every policy is measured on: around the history's
// median of 100 s.
var pollingJobs = []time.Duration{86 * time.Second, 93 * time.Second, 100 * time.Second, 104 * time.Second, 111 * time.Second, 118 * time.Second}

func measure(t *testing.T, w *pollingWorld) (lag time.Duration, polls int) {
	for _, d := range pollingJobs {
		r := w.sync(t, d)
		lag += r.lag
		polls += r.polls
	}
	return lag, polls
}

// With a learned history the polls cluster where jobs end: the lag falls to
// well under half the seed cadence's at no more than 1.5× its polls; the
// detection lag reaches the observer.
func TestPollingLearnedPlanBeatsSeed(t *testing.T) {
	seed := newPollingWorld(t, handlers.PollSeed, 0)
	seed.history(t, 100*time.Second, 20)
	seedLag, seedPolls := measure(t, seed)

	hist := newPollingWorld(t, handlers.PollHistory, 0)
	hist.history(t, 100*time.Second, 20)
	lag, polls := measure(t, hist)
	t.Logf("seed: lag %s, %d polls; history: lag %s, %d polls (over %d jobs)", seedLag, seedPolls, lag, polls, len(pollingJobs))
	if lag*3 > seedLag {
		t.Errorf("learned plan: lag %s, want under a third of the seed cadence's %s", lag, seedLag)
	}
	if float64(polls) > 1.5*float64(seedPolls) {
		t.Errorf("learned plan: %d polls, want at most 1.5× the seed cadence's %d", polls, seedPolls)
	}
	hist.obs.mu.Lock()
	defer hist.obs.mu.Unlock()
	if len(hist.obs.lags) != len(pollingJobs) {
		t.Fatalf("finished events: %d, want %d", len(hist.obs.lags), len(pollingJobs))
	}
	for i, l := range hist.obs.lags {
		if l <= 0 || l > time.Minute {
			t.Errorf("finished event %d: detection lag %s, want the estimate (0, 1m]", i, l)
		}
	}
	if hist.obs.ends == 0 {
		t.Error("no polled event carried an expected end")
	}
}

// With X-Progress in the last phase the end is extrapolated: less lag again.
func TestPollingProgressShortensLag(t *testing.T) {
	plain := newPollingWorld(t, handlers.PollHistory, 0)
	plain.history(t, 100*time.Second, 20)
	plainLag, _ := measure(t, plain)

	prog := newPollingWorld(t, handlers.PollHistory, 0.6)
	prog.history(t, 100*time.Second, 20)
	lag, polls := measure(t, prog)
	t.Logf("history: lag %s; with X-Progress: lag %s, %d polls", plainLag, lag, polls)
	if lag >= plainLag {
		t.Errorf("with X-Progress: lag %s, want under %s", lag, plainLag)
	}
}

// Without history (and with the seed policy whatever the history) the polls
// come at exactly the seed cadence; a completed job's duration is recorded
// (halfway between its last two polls), and the second-to-third syncs still
// follow the seed cadence until MinSamples durations are known.
func TestPollingSeedFallback(t *testing.T) {
	want := func(n int) []time.Duration {
		var at []time.Duration
		e := time.Duration(0)
		for i := range n {
			e += pollplan.Config{}.Seed(i)
			at = append(at, e)
		}
		return at
	}
	for _, tc := range []struct {
		name    string
		policy  string
		history int
	}{
		{"no history", handlers.PollHistory, 0},
		{"too little history", handlers.PollHistory, 2},
		{"seed policy", handlers.PollSeed, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newPollingWorld(t, tc.policy, 0)
			if tc.history > 0 {
				w.history(t, 100*time.Second, tc.history)
			}
			r := w.sync(t, 100*time.Second)
			if fmt.Sprint(r.at) != fmt.Sprint(want(len(r.at))) {
				t.Fatalf("polls at %v, want the seed cadence %v", r.at, want(len(r.at)))
			}
			ds, err := w.e.store.Durations(context.Background(), "t1", w.shape)
			if err != nil {
				t.Fatal(err)
			}
			last, prev := r.at[len(r.at)-1], r.at[len(r.at)-2]
			// The store keeps whole milliseconds.
			if d := pollplan.Duration(prev, last).Truncate(time.Millisecond); len(ds) != tc.history+1 || ds[0] != d {
				t.Fatalf("recorded durations %v, want %s first of %d", ds, d, tc.history+1)
			}
		})
	}
}
