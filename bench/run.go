package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Stream and consumer names of the generated configuration (the service's
// defaults): the bench deletes the stream before each scenario.
const (
	streamName   = "PATHLING_SYNC"
	consumerName = "pathling-sync"
)

// Env is one bench run: the servers, the service binary and the options,
// shared by the scenarios it runs one after another.
type Env struct {
	Opts    Options
	Servers *Servers
	Bin     string

	nc        *nats.Conn
	js        jetstream.JetStream
	rdb       *redis.Client
	redisAddr string
	subjects  messages.Subjects
	trials    int
}

// NewEnv connects to the servers.
func NewEnv(ctx context.Context, o Options, s *Servers, bin string) (*Env, error) {
	e := &Env{Opts: o, Servers: s, Bin: bin, subjects: messages.Subjects{}}
	var err error
	e.nc, err = nats.Connect(s.NATSURL, nats.Name("pathling-sync-bench"))
	if err != nil {
		return nil, fmt.Errorf("bench: NATS %s: %w", s.NATSURL, err)
	}
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(s.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("bench: Redis URL: %w", err)
	}
	e.redisAddr = opt.Addr
	e.rdb = redis.NewClient(opt)
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("bench: Redis %s: %w", s.RedisURL, err)
	}
	return e, nil
}

// Close closes the connections.
func (e *Env) Close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
}

// trial is one service process with its stand-in, measured from begin to end.
type trial struct {
	env      *Env
	name     string
	tag      string
	targets  []string
	standIn  *StandIn
	svc      *Service
	outcomes *collector

	u0  Usage
	r0  RedisStats
	c0  StandInCounters
	mon *MonitorSample
	t0  time.Time
	// sc0 is the service's counters at begin (scErr: not read).
	sc0   ServiceCounters
	scErr error
}

// newTrial resets the stream, starts a stand-in and the service with sc
// (targets, URLs and key prefix filled in) and an outcome collector for n
// requests.
func (e *Env) newTrial(ctx context.Context, name string, targets []string, n int, d Durations, sc ServiceConfig, opts ...StandInOption) (*trial, error) {
	e.trials++
	t := &trial{env: e, name: name, targets: targets, tag: fmt.Sprintf("bench-%s-%d-%d", name, time.Now().Unix(), e.trials)}
	if err := e.js.DeleteStream(ctx, streamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bench: delete stream %s: %w", streamName, err)
	}
	if e.Servers.StartedRedis {
		_ = e.rdb.FlushAll(ctx).Err()
	}
	var err error
	t.standIn, err = NewStandIn(d, opts...)
	if err != nil {
		return nil, err
	}
	t.outcomes, err = newCollector(e.nc, e.subjects, t.tag, n)
	if err != nil {
		t.close()
		return nil, err
	}
	sc.NATSURL, sc.RedisURL, sc.StandIn, sc.Targets = e.Servers.NATSURL, e.Servers.RedisURL, t.standIn, targets
	sc.KeyPrefix = t.tag + ":"
	if sc.LogLevel == "" {
		sc.LogLevel = e.Opts.LogLevel
	}
	t.svc, err = StartService(ctx, e.Bin, e.Opts.WorkDir, name, sc)
	if err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *trial) close() {
	if t.svc != nil {
		t.svc.Stop()
	}
	if t.outcomes != nil {
		t.outcomes.close()
	}
	if t.standIn != nil {
		_ = t.standIn.Close()
	}
}

// begin takes the snapshots the costs are measured from, and samples
// MONITOR from monitorDelay on.
func (t *trial) begin(ctx context.Context, monitorDelay time.Duration) {
	t.t0 = time.Now()
	t.u0, _ = t.svc.Usage()
	t.r0, _ = ReadRedisStats(ctx, t.env.rdb)
	t.c0 = t.standIn.Counters()
	t.sc0, t.scErr = t.svc.Counters(ctx)
	t.mon = SampleMonitor(ctx, t.env.redisAddr, monitorDelay, t.env.Opts.MonitorWindow)
}

// costs are the per-unit figures of a trial between begin and now.
type costs struct {
	wall                time.Duration
	cpu                 time.Duration
	rss                 int64
	redis               RedisStats
	roundTrips          int64 // the service's own count (-1: not read)
	mallocs, allocBytes int64 // the service's heap allocations: objects, bytes (-1: not read)
	clientShare         float64
	kickOffs, polls, dl int64
}

func (t *trial) end(ctx context.Context) costs {
	u1, _ := t.svc.Usage()
	r1, _ := ReadRedisStats(ctx, t.env.rdb)
	c1 := t.standIn.Counters()
	roundTrips, mallocs, allocBytes := int64(-1), int64(-1), int64(-1)
	if sc1, err := t.svc.Counters(ctx); err == nil && t.scErr == nil {
		roundTrips = sc1.RedisRoundTrips - t.sc0.RedisRoundTrips
		mallocs, allocBytes = sc1.Mallocs-t.sc0.Mallocs, sc1.AllocBytes-t.sc0.AllocBytes
	}
	return costs{
		roundTrips: roundTrips, mallocs: mallocs, allocBytes: allocBytes,
		wall: time.Since(t.t0), cpu: u1.CPU - t.u0.CPU, rss: u1.RSS, redis: r1.Sub(t.r0),
		clientShare: t.mon.ClientShare(),
		kickOffs:    c1.KickOffs - t.c0.KickOffs, polls: c1.Polls - t.c0.Polls, dl: c1.Deletes - t.c0.Deletes,
	}
}

// addPerSync adds the cost figures of units (syncs, or answers) to r.
func (c costs) addPerSync(r *Report, units int64, floorCPUms *float64) {
	if units <= 0 {
		return
	}
	n := float64(units)
	r.Add(Figure{Name: "cpu_ms_per_sync", Label: "service CPU per sync", Unit: "ms", Value: float64(c.cpu.Microseconds()) / 1000 / n, Floor: floorCPUms, LowerIsBetter: true})
	r.Add(Figure{Name: "redis_cmds_per_sync", Label: "Redis commands per sync (scripts' included)", Value: float64(c.redis.Total) / n, LowerIsBetter: true})
	if c.roundTrips >= 0 {
		r.Add(Figure{Name: "redis_round_trips_per_sync", Label: "Redis round trips per sync", Value: float64(c.roundTrips) / n, Floor: ptr(5), LowerIsBetter: true})
	}
	if c.mallocs >= 0 {
		// The whole process's, its idle loops and the scrapes included.
		r.Add(Figure{Name: "allocs_per_sync", Label: "heap allocations per sync (objects)", Value: float64(c.mallocs) / n, LowerIsBetter: true})
		r.Add(Figure{Name: "alloc_kb_per_sync", Label: "heap allocated per sync", Unit: "kB", Value: float64(c.allocBytes) / 1024 / n, LowerIsBetter: true})
	}
	if c.clientShare > 0 {
		// An upper bound only: MONITOR shows a pipeline's commands one by one.
		r.Add(Figure{Name: "redis_monitor_round_trips_per_sync", Label: "Redis client commands per sync (MONITOR estimate)", Value: c.clientShare * float64(c.redis.Total) / n, LowerIsBetter: true})
	}
	r.Add(Figure{Name: "kickoffs_per_sync", Label: "kick-offs per sync", Value: float64(c.kickOffs) / n})
	r.Add(Figure{Name: "polls_per_sync", Label: "polls per sync", Value: float64(c.polls) / n})
	r.Add(Figure{Name: "rss_mb", Label: "service RSS at the end", Unit: "MB", Value: float64(c.rss) / (1 << 20), LowerIsBetter: true})
	r.Params["redis_commands"] = perUnit(c.redis.Commands, n)
}

func perUnit(m map[string]int64, n float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		out[k] = round(float64(v)/n, 3)
	}
	return out
}

// collector reads outcomes of the trial's requests from the stream's
// completed and failed subjects.
type collector struct {
	tag      string
	at       []atomic.Int64 // Unix ns of the first outcome of request i
	failed   []atomic.Bool
	n        atomic.Int64
	done     atomic.Int64
	fails    atomic.Int64
	dups     atomic.Int64
	mu       sync.Mutex
	reasons  map[string]int64
	sub1     *nats.Subscription
	sub2     *nats.Subscription
	lastNano atomic.Int64
}

func newCollector(nc *nats.Conn, s messages.Subjects, tag string, n int) (*collector, error) {
	c := &collector{tag: tag, at: make([]atomic.Int64, n), failed: make([]atomic.Bool, n), reasons: map[string]int64{}}
	var err error
	if c.sub1, err = nc.Subscribe(s.Completed("*"), c.handle); err != nil {
		return nil, err
	}
	if c.sub2, err = nc.Subscribe(s.Failed("*"), c.handle); err != nil {
		return nil, err
	}
	for _, sub := range []*nats.Subscription{c.sub1, c.sub2} {
		_ = sub.SetPendingLimits(-1, -1)
	}
	return c, nc.Flush()
}

func (c *collector) close() {
	_ = c.sub1.Unsubscribe()
	_ = c.sub2.Unsubscribe()
}

func (c *collector) handle(m *nats.Msg) {
	now := time.Now().UnixNano()
	id := m.Header.Get(messages.HeaderID)
	failed := strings.HasSuffix(id, "/failed")
	id = strings.TrimSuffix(strings.TrimSuffix(id, "/completed"), "/failed")
	num, ok := strings.CutPrefix(id, c.tag+"-")
	if !ok {
		return
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 || i >= len(c.at) {
		return
	}
	if !c.at[i].CompareAndSwap(0, now) {
		c.dups.Add(1)
		return
	}
	c.lastNano.Store(now)
	if failed {
		c.failed[i].Store(true)
		c.fails.Add(1)
		var body struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(m.Data, &body)
		c.mu.Lock()
		c.reasons[body.Reason]++
		c.mu.Unlock()
	} else {
		c.done.Add(1)
	}
	c.n.Add(1)
}

func (c *collector) count() int64 { return c.n.Load() }

// wait waits until n outcomes arrived, or timeout.
func (c *collector) wait(ctx context.Context, n int64, timeout time.Duration) error {
	return waitFor(ctx, timeout, fmt.Sprintf("%d outcomes", n), func() bool { return c.count() >= n })
}

func (c *collector) reasonsCopy() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{}
	for k, v := range c.reasons {
		out[k] = v
	}
	return out
}

// publisher publishes SyncRequested events as `pathling-sync request` does:
// CloudEvents binary mode in NATS headers, Nats-Msg-Id = ce-id.
type publisher struct {
	js     jetstream.JetStream
	s      messages.Subjects
	tag    string
	pubAt  []atomic.Int64
	errs   atomic.Int64
	lastAt atomic.Int64
}

func (t *trial) publisher() *publisher {
	return &publisher{js: t.env.js, s: t.env.subjects, tag: t.tag, pubAt: make([]atomic.Int64, len(t.outcomes.at))}
}

func (p *publisher) publish(ctx context.Context, i int, target string, body []byte) {
	id := p.tag + "-" + strconv.Itoa(i)
	now := time.Now()
	env := messages.Envelope{ID: id, Source: "pathling-sync-bench", Type: messages.TypeRequested, Subject: target,
		ContentType: messages.ContentTypeJSON, Time: now.UTC()}
	msg := nats.NewMsg(p.s.Requested(target))
	env.WriteTo(msg.Header)
	msg.Data = body
	p.pubAt[i].Store(now.UnixNano())
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := p.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id)); err != nil {
		p.errs.Add(1)
	}
	p.lastAt.Store(time.Now().UnixNano())
}

// run publishes requests from..to-1 with workers goroutines, at rate per
// second (0: as fast as they can). pick gives each request's target and body.
func (p *publisher) run(ctx context.Context, from, to int, rate float64, workers int, pick func(i int) (string, []byte)) {
	jobs := make(chan int, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				target, body := pick(i)
				p.publish(ctx, i, target, body)
			}
		}()
	}
	start := time.Now()
	for i := from; i < to; i++ {
		if rate > 0 {
			// Pacing, not waiting for a condition: request i is due at start + i/rate.
			if d := time.Until(start.Add(time.Duration(float64(i-from) / rate * float64(time.Second)))); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// latencies returns publish → outcome of the requests that have both, in ms.
func latencies(p *publisher, c *collector) []float64 {
	var out []float64
	for i := range c.at {
		if o, s := c.at[i].Load(), p.pubAt[i].Load(); o != 0 && s != 0 {
			out = append(out, float64(o-s)/1e6)
		}
	}
	sort.Float64s(out)
	return out
}

// pct is the p-th percentile of sorted xs (nearest rank), 0 when empty.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(p/100*float64(len(xs))+0.5) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// requestBody is the SyncRequested of the scenarios: the source comes from
// the target's defaults.
func requestBody(concurrency string) []byte {
	b := map[string]any{"saveMode": "merge", "types": []string{"Patient", "Observation"}}
	if concurrency != "" {
		b["concurrency"] = concurrency
	}
	out, _ := json.Marshal(b)
	return out
}

func targetNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("t%05d", i)
	}
	return out
}

func ptr(f float64) *float64 { return &f }

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if f < 0 {
		return -float64(int64(-f*p+0.5)) / p
	}
	return float64(int64(f*p+0.5)) / p
}
