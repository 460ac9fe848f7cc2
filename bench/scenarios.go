package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Options are a run's settings and the sizes of each scenario.
type Options struct {
	WorkDir  string // configurations, logs, profiles
	FloorDir string // floorbench's directory ("" : no floor)
	LogLevel string // the service's log level
	// PProf turns admin.pprof on in the throughput, inflight and storm
	// scenarios and saves, in WorkDir, CPU profiles of ProfileSeconds of the
	// flood and of the storm's first seconds, and heap and goroutine
	// profiles and MemStats at the end of the in-flight window.
	PProf          bool
	ProfileSeconds int
	MonitorWindow  time.Duration

	Throughput struct{ N, Targets, Workers int }
	Paced      struct {
		Rates    []float64
		Duration time.Duration
		Targets  int
	}
	Inflight struct {
		N      int
		Window time.Duration
	}
	Storm     struct{ N int }
	Queue     struct{ Pairs int }
	Freshness FreshnessOptions
}

// DefaultOptions are the sizes; short ones prove the command works
// in well under a minute.
func DefaultOptions(short bool) Options {
	var o Options
	o.LogLevel = "info"
	o.ProfileSeconds = 15
	if short {
		o.Throughput.N, o.Throughput.Targets, o.Throughput.Workers = 300, 50, 256
		o.Paced.Rates, o.Paced.Duration, o.Paced.Targets = []float64{100}, 2*time.Second, 50
		o.Inflight.N, o.Inflight.Window = 300, 3*time.Second
		o.Storm.N = 300
		o.Queue.Pairs = 10
		o.Freshness = FreshnessOptions{Targets: 4, Warmup: 6, Syncs: 4, Compress: 240, Progress: "both", ProgressFrom: 0.7}
		return o
	}
	o.Throughput.N, o.Throughput.Targets, o.Throughput.Workers = 20000, 1000, 256
	o.Paced.Rates, o.Paced.Duration, o.Paced.Targets = []float64{500, 1000}, 20*time.Second, 1000
	o.Inflight.N, o.Inflight.Window = 10000, 2*time.Minute
	o.Storm.N = 10000
	o.Queue.Pairs = 200
	o.Freshness = FreshnessOptions{Targets: 20, Warmup: 6, Syncs: 6, Compress: 90, Progress: "both", ProgressFrom: 0.7}
	return o
}

// Scenario is one named measurement. Run returns one report per
// configuration it measures (paced: one per rate).
type Scenario struct {
	Name string
	Doc  string
	Run  func(ctx context.Context, e *Env) ([]*Report, error)
}

// Scenarios are the known scenarios, in the order `-scenario all` runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{"throughput", "flood of N requests over T targets (concurrency queue, instant jobs): syncs/s", runThroughput},
		{"paced", "requests at a fixed rate: publish → outcome percentiles", runPaced},
		{"inflight", "N syncs held in flight (hour-long jobs, seed cadence): RSS, CPU, polls/s, InProgress/s, Redis ops/s; start-up", runInflight},
		{"storm", "N requests for one busy target (forbid): kick-offs, answers/s", runStorm},
		{"queue", "pairs of queued requests per target: lock release → next kick-off", runQueue},
		{"freshness", "lognormal jobs per target and shape, history policy beside the seed cadence (compressed time): detection lag p50/p90, polls per sync, without and with X-Progress", runFreshness},
	}
}

// fastPolls: a job that is done at once is seen done at the first poll, 1 ms
// after the kick-off, so that the flood measures the service, not its waits.
func fastPolls(sc *ServiceConfig) {
	sc.PollInitial, sc.PollFactor, sc.PollMax, sc.PollJitter = time.Millisecond, 1, time.Second, ptr(0)
}

func runThroughput(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Throughput
	r := NewReport("throughput")
	r.Params["requests"], r.Params["targets"], r.Params["maxWorkers"] = o.N, o.Targets, o.Workers
	r.Params["concurrency"], r.Params["queueRetry"], r.Params["job"] = "queue", "20ms", "instant, first poll after 1ms"
	sc := ServiceConfig{MaxWorkers: o.Workers, QueueRetry: 20 * time.Millisecond, PProf: e.Opts.PProf}
	fastPolls(&sc)
	targets := targetNames(o.Targets)
	t, err := e.newTrial(ctx, "throughput", targets, o.N, Fixed(0), sc)
	if err != nil {
		return nil, err
	}
	defer t.close()
	var profErr error
	var profWG sync.WaitGroup
	if e.Opts.PProf {
		path := e.Opts.WorkDir + "/throughput.cpu.pprof"
		r.Params["profile"] = path
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			profErr = t.svc.Profile(ctx, e.Opts.ProfileSeconds, path)
		}()
	}
	body := requestBody("queue")
	p := t.publisher()
	t.begin(ctx, 2*time.Second)
	// Allocation sites of the flood alone: the allocs profile before and
	// after it (go tool pprof -diff_base before after).
	allocs := func(name string) {
		if !e.Opts.PProf {
			return
		}
		path := e.Opts.WorkDir + "/throughput." + name + ".pprof"
		if err := t.svc.Snapshot(ctx, "allocs", path); err != nil {
			r.Params[name+"Error"] = err.Error()
			return
		}
		r.Params[name] = path
	}
	allocs("allocs-before")
	start := time.Now()
	p.run(ctx, 0, o.N, 0, 64, func(i int) (string, []byte) { return targets[i%len(targets)], body })
	if err := t.outcomes.wait(ctx, int64(o.N), 15*time.Minute); err != nil {
		return nil, fmt.Errorf("throughput: %w (%d of %d outcomes)", err, t.outcomes.count(), o.N)
	}
	allocs("allocs-after")
	c := t.end(ctx)
	wall := time.Unix(0, t.outcomes.lastNano.Load()).Sub(start)
	profWG.Wait()
	if profErr != nil {
		r.Params["profileError"] = profErr.Error()
	}
	raw, note, ok := e.Floor(ctx, "-n", strconv.Itoa(o.N), "-c", strconv.Itoa(o.Workers), "-targets", strconv.Itoa(o.Targets))
	r.FloorRaw, r.FloorNote = raw, note
	var floorRate, floorCPU *float64
	if ok {
		floorRate, floorCPU = num(raw, "syncs_per_s"), num(raw, "cpu_s_per_1k")
	}
	completed := t.outcomes.done.Load()
	r.Add(Figure{Name: "syncs_per_s", Label: "syncs/s (first publish → last outcome)", Value: float64(completed) / wall.Seconds(), Floor: floorRate})
	r.Add(Figure{Name: "completed", Label: "SyncCompleted", Value: float64(completed)})
	r.Add(Figure{Name: "failed", Label: "SyncFailed", Value: float64(t.outcomes.fails.Load())})
	r.Add(Figure{Name: "publish_s", Label: "publishing took", Unit: "s", Value: time.Unix(0, p.lastAt.Load()).Sub(start).Seconds()})
	c.addPerSync(r, completed, floorCPU)
	if reasons := t.outcomes.reasonsCopy(); len(reasons) > 0 {
		r.Params["failedReasons"] = reasons
	}
	return []*Report{r}, nil
}

func runPaced(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Paced
	var out []*Report
	for _, rate := range o.Rates {
		n := int(rate * o.Duration.Seconds())
		r := NewReport("paced")
		r.Params["rate"], r.Params["requests"], r.Params["targets"] = rate, n, o.Targets
		r.Params["concurrency"], r.Params["job"] = "queue", "instant, first poll after 1ms"
		sc := ServiceConfig{QueueRetry: 20 * time.Millisecond}
		fastPolls(&sc)
		targets := targetNames(o.Targets)
		t, err := e.newTrial(ctx, "paced-"+strconv.Itoa(int(rate)), targets, n, Fixed(0), sc)
		if err != nil {
			return nil, err
		}
		body := requestBody("queue")
		p := t.publisher()
		t.begin(ctx, o.Duration/2)
		start := time.Now()
		p.run(ctx, 0, n, rate, 16, func(i int) (string, []byte) { return targets[i%len(targets)], body })
		// A service that falls behind still gets a while to drain.
		_ = t.outcomes.wait(ctx, int64(n), 2*o.Duration+30*time.Second)
		c := t.end(ctx)
		got := t.outcomes.count()
		wall := time.Unix(0, t.outcomes.lastNano.Load()).Sub(start)
		lat := latencies(p, t.outcomes)
		t.close()
		raw, note, ok := e.Floor(ctx, "-n", strconv.Itoa(n), "-rate", fmt.Sprint(rate), "-targets", strconv.Itoa(o.Targets))
		r.FloorRaw, r.FloorNote = raw, note
		var f50, f90, f99, fCPU *float64
		if ok {
			f50, f90, f99, fCPU = num(raw, "publish_to_ack_ms.p50"), num(raw, "publish_to_ack_ms.p90"), num(raw, "publish_to_ack_ms.p99"), num(raw, "cpu_s_per_1k")
		}
		r.Add(Figure{Name: "served_per_s", Label: "outcomes/s (first publish → last outcome)", Value: float64(got) / wall.Seconds()})
		r.Add(Figure{Name: "missing", Label: "requests without an outcome in time", Value: float64(int64(n) - got), LowerIsBetter: true})
		r.Add(Figure{Name: "latency_p50_ms", Label: "publish → outcome p50 (floor: → ack)", Unit: "ms", Value: pct(lat, 50), Floor: f50, LowerIsBetter: true})
		r.Add(Figure{Name: "latency_p90_ms", Label: "publish → outcome p90", Unit: "ms", Value: pct(lat, 90), Floor: f90, LowerIsBetter: true})
		r.Add(Figure{Name: "latency_p99_ms", Label: "publish → outcome p99", Unit: "ms", Value: pct(lat, 99), Floor: f99, LowerIsBetter: true})
		r.Add(Figure{Name: "latency_max_ms", Label: "publish → outcome max", Unit: "ms", Value: pct(lat, 100), LowerIsBetter: true})
		c.addPerSync(r, t.outcomes.done.Load(), fCPU)
		out = append(out, r)
	}
	return out, nil
}

func runInflight(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Inflight
	r := NewReport("inflight")
	r.Params["inflight"], r.Params["targets"], r.Params["window"] = o.N, o.N, o.Window.String()
	r.Params["job"], r.Params["poll"] = "1h", "seed cadence (5s ×1.5 ≤ 60s, jitter 0.1)"
	r.Params["maxWorkers"] = o.N
	targets := targetNames(o.N)
	// Slots for every sync; everything else at the service's defaults
	// (ackWait 1m: InProgress every 20 s; lockTTL 1m: renewal every 20 s).
	sc := ServiceConfig{MaxWorkers: o.N, PProf: e.Opts.PProf}
	t, err := e.newTrial(ctx, "inflight", targets, o.N, Fixed(time.Hour), sc)
	if err != nil {
		return nil, err
	}
	defer t.close()
	r.Add(Figure{Name: "startup_s", Label: fmt.Sprintf("start-up to /readyz, %d targets", o.N), Unit: "s", Value: t.svc.StartUp.Seconds(), LowerIsBetter: true})
	// Idle: a moment after /readyz, before any request (a measurement
	// interval, not a wait for a condition).
	time.Sleep(time.Second)
	idle, _ := t.svc.Usage()
	r.Add(Figure{Name: "idle_rss_mb", Label: "idle RSS", Unit: "MB", Value: float64(idle.RSS) / (1 << 20), LowerIsBetter: true})

	// Count the service's InProgress acks (+WPI) on the consumer's ack subjects.
	var wpi atomic.Int64
	sub, err := e.nc.Subscribe("$JS.ACK."+streamName+"."+consumerName+".>", func(m *nats.Msg) {
		if string(m.Data) == "+WPI" {
			wpi.Add(1)
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	body := requestBody("")
	p := t.publisher()
	start := time.Now()
	p.run(ctx, 0, o.N, 0, 64, func(i int) (string, []byte) { return targets[i], body })
	if err := waitFor(ctx, 10*time.Minute, fmt.Sprintf("%d kick-offs", o.N), func() bool {
		return t.standIn.Counters().KickOffs >= int64(o.N) || t.outcomes.count() > 0
	}); err != nil {
		return nil, fmt.Errorf("inflight: %w (%d kick-offs)", err, t.standIn.Counters().KickOffs)
	}
	fill := time.Since(start)
	w0 := wpi.Load()
	t.begin(ctx, o.Window/2)
	var profWG sync.WaitGroup
	if secs := min(e.Opts.ProfileSeconds, int(o.Window/time.Second)-1); e.Opts.PProf && secs > 0 {
		// The window's CPU, while the runs wait and poll.
		path := e.Opts.WorkDir + "/inflight.cpu.pprof"
		r.Params["cpu.pprof"] = path
		profWG.Go(func() {
			if err := t.svc.Profile(ctx, secs, path); err != nil {
				r.Params["cpu.pprofError"] = err.Error()
			}
		})
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.Window): // the measurement window
	}
	profWG.Wait()
	c := t.end(ctx)
	secs := c.wall.Seconds()
	if e.Opts.PProf {
		for _, p := range []struct{ name, query, file string }{
			{"heap", "", "heap.pprof"}, {"goroutine", "", "goroutine.pprof"},
			{"heap", "?debug=1", "memstats.txt"}, // ends with runtime.MemStats: stacks, heap in use, released
		} {
			path := e.Opts.WorkDir + "/inflight." + p.file
			r.Params[p.file] = path
			if err := t.svc.Snapshot(ctx, p.name+p.query, path); err != nil {
				r.Params[p.file+"Error"] = err.Error()
			}
		}
	}
	raw, note, ok := e.Floor(ctx, "-n", strconv.Itoa(o.N), "-c", "256", "-targets", strconv.Itoa(o.N))
	r.FloorRaw, r.FloorNote = raw, note
	var floorRate *float64
	if ok {
		floorRate = num(raw, "syncs_per_s")
	}
	r.Add(Figure{Name: "fill_kickoffs_per_s", Label: "kick-offs/s while filling (floor: syncs/s)", Value: float64(o.N) / fill.Seconds(), Floor: floorRate})
	r.Add(Figure{Name: "rss_mb", Label: fmt.Sprintf("RSS with %d in flight", o.N), Unit: "MB", Value: float64(c.rss) / (1 << 20), LowerIsBetter: true})
	r.Add(Figure{Name: "cpu_cores", Label: "CPU (cores)", Value: c.cpu.Seconds() / secs, LowerIsBetter: true})
	r.Add(Figure{Name: "polls_per_s", Label: "polls/s", Value: float64(c.polls) / secs})
	r.Add(Figure{Name: "inprogress_per_s", Label: "InProgress/s", Value: float64(wpi.Load()-w0) / secs})
	r.Add(Figure{Name: "redis_ops_per_s", Label: "Redis commands/s (scripts' included)", Value: float64(c.redis.Total) / secs})
	if c.roundTrips >= 0 {
		r.Add(Figure{Name: "redis_round_trips_per_s", Label: "Redis round trips/s", Value: float64(c.roundTrips) / secs})
	}
	if c.clientShare > 0 {
		r.Add(Figure{Name: "redis_monitor_round_trips_per_s", Label: "Redis client commands/s (MONITOR estimate)", Value: c.clientShare * float64(c.redis.Total) / secs})
	}
	r.Add(Figure{Name: "outcomes", Label: "outcomes during the run (want 0)", Value: float64(t.outcomes.count())})
	r.Params["redis_commands_per_s"] = perUnit(c.redis.Commands, secs)
	return []*Report{r}, nil
}

func runStorm(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Storm
	r := NewReport("storm")
	r.Params["requests"], r.Params["targets"], r.Params["concurrency"], r.Params["job"] = o.N, 1, "forbid", "1h"
	targets := []string{"busy"}
	t, err := e.newTrial(ctx, "storm", targets, o.N, Fixed(time.Hour), ServiceConfig{PProf: e.Opts.PProf})
	if err != nil {
		return nil, err
	}
	defer t.close()
	body := requestBody("")
	p := t.publisher()
	p.run(ctx, 0, 1, 0, 1, func(int) (string, []byte) { return "busy", body })
	if err := waitFor(ctx, time.Minute, "the first kick-off", func() bool { return t.standIn.Counters().KickOffs >= 1 }); err != nil {
		return nil, err
	}
	profDone := make(chan error, 1)
	if e.Opts.PProf {
		// A profile of the storm's first seconds (it lasts a few).
		path := e.Opts.WorkDir + "/storm.cpu.pprof"
		r.Params["profile"] = path
		go func() { profDone <- t.svc.Profile(ctx, min(e.Opts.ProfileSeconds, 3), path) }()
	} else {
		profDone <- nil
	}
	t.begin(ctx, time.Second)
	start := time.Now()
	p.run(ctx, 1, o.N, 0, 64, func(int) (string, []byte) { return "busy", body })
	if err := t.outcomes.wait(ctx, int64(o.N-1), 10*time.Minute); err != nil {
		return nil, fmt.Errorf("storm: %w (%d of %d answers)", err, t.outcomes.count(), o.N-1)
	}
	c := t.end(ctx)
	wall := time.Unix(0, t.outcomes.lastNano.Load()).Sub(start)
	if err := <-profDone; err != nil {
		r.Params["profileError"] = err.Error()
	}
	raw, note, ok := e.Floor(ctx, "-n", strconv.Itoa(o.N), "-targets", "1", "-mode", "nats-only")
	r.FloorRaw, r.FloorNote = raw, note
	var floorRate *float64
	if ok {
		floorRate = num(raw, "syncs_per_s")
	}
	answers := t.outcomes.count()
	r.Add(Figure{Name: "answers_per_s", Label: "answers/s (floor nats-only: syncs/s)", Value: float64(answers) / wall.Seconds(), Floor: floorRate})
	r.Add(Figure{Name: "kickoffs", Label: "kick-offs (want 1)", Value: float64(t.standIn.Counters().KickOffs), LowerIsBetter: true})
	r.Add(Figure{Name: "conflicts", Label: "SyncFailed conflict", Value: float64(t.outcomes.reasonsCopy()["conflict"])})
	c.addPerSync(r, answers, nil)
	for i := range r.Figures {
		r.Figures[i].Label = stormLabel(r.Figures[i].Label)
	}
	r.Params["redis_commands"] = perUnit(c.redis.Commands, float64(answers))
	return []*Report{r}, nil
}

// stormLabel: in a storm the unit is an answer, not a sync.
func stormLabel(s string) string { return strings.ReplaceAll(s, "per sync", "per answer") }

func runQueue(ctx context.Context, e *Env) ([]*Report, error) {
	o := e.Opts.Queue
	r := NewReport("queue")
	r.Params["pairs"], r.Params["targets"], r.Params["concurrency"] = o.Pairs, 2*o.Pairs, "queue"
	r.Params["job"], r.Params["queueRetry"] = "300ms, polled every 100ms", "5s (default)"
	r.Params["phases"] = fmt.Sprintf("paced: %d pairs, one every %s (releases apart); burst: %d pairs at once (releases together)",
		o.Pairs, queuePairEvery, o.Pairs)
	// The first half of the targets gets its pairs paced, the second half
	// all at once.
	targets := targetNames(2 * o.Pairs)
	paced, burst := targets[:o.Pairs], targets[o.Pairs:]
	// Per target: when its first job was DELETEd (just before the lock's
	// release) and when its second job was kicked off.
	var mu sync.Mutex
	firstDelete, secondKick, kicks := map[string]time.Time{}, map[string]time.Time{}, map[string]int{}
	observe := func(ev StandInEvent) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Kind {
		case "kickoff":
			kicks[ev.Target]++
			if kicks[ev.Target] == 2 {
				secondKick[ev.Target] = ev.At
			}
		case "delete":
			if _, ok := firstDelete[ev.Target]; !ok {
				firstDelete[ev.Target] = ev.At
			}
		}
	}
	sc := ServiceConfig{PollInitial: 100 * time.Millisecond, PollFactor: 1, PollMax: 100 * time.Millisecond, PollJitter: ptr(0)}
	t, err := e.newTrial(ctx, "queue", targets, 4*o.Pairs, Fixed(300*time.Millisecond), sc, WithObserver(observe))
	if err != nil {
		return nil, err
	}
	defer t.close()
	body := requestBody("queue")
	p := t.publisher()
	t.begin(ctx, time.Second)
	// Paced: each target's first request, then at once its second, which
	// finds the target busy and queues; the next pair a little later, so
	// that each release hands over alone, as in a fleet whose jobs end at
	// different times.
	p.run(ctx, 0, 2*o.Pairs, float64(2*time.Second/queuePairEvery), 1, func(i int) (string, []byte) { return paced[i/2], body })
	if err := t.outcomes.wait(ctx, int64(2*o.Pairs), 5*time.Minute); err != nil {
		return nil, fmt.Errorf("queue (paced): %w (%d of %d outcomes)", err, t.outcomes.count(), 2*o.Pairs)
	}
	// Burst: every first request, then every second one: the firsts end
	// together, and their releases hand over all at once.
	p.run(ctx, 2*o.Pairs, 4*o.Pairs, 0, 1, func(i int) (string, []byte) { return burst[i%o.Pairs], body })
	if err := t.outcomes.wait(ctx, int64(4*o.Pairs), 5*time.Minute); err != nil {
		return nil, fmt.Errorf("queue (burst): %w (%d of %d outcomes)", err, t.outcomes.count(), 4*o.Pairs)
	}
	c := t.end(ctx)
	gapsOf := func(targets []string) []float64 {
		var gaps []float64
		mu.Lock()
		defer mu.Unlock()
		for _, tg := range targets {
			k, ok1 := secondKick[tg]
			d, ok2 := firstDelete[tg]
			if ok1 && ok2 {
				gaps = append(gaps, float64(k.Sub(d).Microseconds())/1000)
			}
		}
		sort.Float64s(gaps)
		return gaps
	}
	pacedGaps, burstGaps := gapsOf(paced), gapsOf(burst)
	raw, note, ok := e.Floor(ctx, "-n", strconv.Itoa(max(2*o.Pairs, 200)), "-rate", "100", "-targets", strconv.Itoa(o.Pairs))
	r.FloorRaw, r.FloorNote = raw, note
	var f50 *float64
	if ok {
		f50 = num(raw, "publish_to_kickoff_ms.p50")
	}
	r.Add(Figure{Name: "gap_p50_ms", Label: "release → queued kick-off p50, releases apart (floor: pub→kick-off)", Unit: "ms", Value: pct(pacedGaps, 50), Floor: f50, LowerIsBetter: true})
	r.Add(Figure{Name: "gap_p90_ms", Label: "release → queued kick-off p90, releases apart", Unit: "ms", Value: pct(pacedGaps, 90), LowerIsBetter: true})
	r.Add(Figure{Name: "gap_max_ms", Label: "release → queued kick-off max, releases apart", Unit: "ms", Value: pct(pacedGaps, 100), LowerIsBetter: true})
	r.Add(Figure{Name: "burst_gap_p50_ms", Label: "release → queued kick-off p50, all releases at once", Unit: "ms", Value: pct(burstGaps, 50), LowerIsBetter: true})
	r.Add(Figure{Name: "burst_gap_p90_ms", Label: "release → queued kick-off p90, all releases at once", Unit: "ms", Value: pct(burstGaps, 90), LowerIsBetter: true})
	r.Add(Figure{Name: "burst_gap_max_ms", Label: "release → queued kick-off max, all releases at once", Unit: "ms", Value: pct(burstGaps, 100), LowerIsBetter: true})
	r.Add(Figure{Name: "handovers", Label: "hand-overs measured (paced + burst)", Value: float64(len(pacedGaps) + len(burstGaps))})
	c.addPerSync(r, t.outcomes.done.Load(), nil)
	return []*Report{r}, nil
}

// queuePairEvery spaces the paced pairs of the queue scenario: longer than
// one hand-over takes, so that releases do not queue behind each other.
const queuePairEvery = 20 * time.Millisecond
