package observability

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// MeterName is the instrumentation scope of the service's metrics.
const MeterName = "github.com/pathling-sync/pathling-sync"

// The metrics, as exposed on /metrics (the Prometheus exporter turns the
// instrument names' dots into underscores and appends the unit and _total
// suffixes; see docs/observability.md for the full table).
const (
	metricSyncs            = "pathling_sync.syncs"                     // pathling_sync_syncs_total{target,outcome,reason}
	metricSyncDuration     = "pathling_sync.sync.duration"             // pathling_sync_sync_duration_seconds{target,outcome}
	metricSyncPolls        = "pathling_sync.sync.polls"                // pathling_sync_sync_polls{target,outcome}
	metricInFlight         = "pathling_sync.syncs_in_flight"           // pathling_sync_syncs_in_flight{target}
	metricLockConflicts    = "pathling_sync.lock_conflicts"            // pathling_sync_lock_conflicts_total{target}
	metricLockLosses       = "pathling_sync.lock_losses"               // pathling_sync_lock_losses_total{target}
	metricRedeliveries     = "pathling_sync.redeliveries"              // pathling_sync_redeliveries_total{target}
	metricAdoptions        = "pathling_sync.adoptions"                 // pathling_sync_adoptions_total{target}
	metricLastSuccess      = "pathling_sync.last_success_timestamp"    // pathling_sync_last_success_timestamp_seconds{target}
	metricWatermarkAge     = "pathling_sync.watermark_age"             // pathling_sync_watermark_age_seconds{target}
	metricRequests         = "pathling_sync.pathling.requests"         // pathling_sync_pathling_requests_total{target,kind,status_code}
	metricRequestsDuration = "pathling_sync.pathling.request.duration" // pathling_sync_pathling_request_duration_seconds{target,kind}
	metricDropped          = "pathling_sync.requests_dropped"          // pathling_sync_requests_dropped_total{reason}
	metricRedisPersistence = "pathling_sync.redis.persistence_enabled" // pathling_sync_redis_persistence_enabled
	metricRedisRoundTrips  = "pathling_sync.redis.round_trips"         // pathling_sync_redis_round_trips_total
)

// metricClockSkew is pathling_sync_clock_skew_seconds{target}.
const metricClockSkew = "pathling_sync.clock_skew"

// Freshness: pathling_sync_detection_lag_seconds{target} and
// pathling_sync_job_expected_end_timestamp_seconds{target}.
const (
	metricDetectionLag   = "pathling_sync.detection_lag"
	metricJobExpectedEnd = "pathling_sync.job.expected_end_timestamp"
)

// lagBuckets: a poll comes within a second of a job's end at best, up to
// half the seed cadence's 1-minute cap late at worst.
var lagBuckets = []float64{0.25, 0.5, 1, 2, 5, 10, 15, 30, 60}

// Label (attribute) keys of the metrics. Request and run ids are never labels.
const (
	labelTarget     = attribute.Key("target")
	labelOutcome    = attribute.Key("outcome")
	labelReason     = attribute.Key("reason")
	labelKind       = attribute.Key("kind")
	labelStatusCode = attribute.Key("status_code")
)

// Outcomes (label outcome).
const (
	outcomeCompleted = "completed"
	outcomeFailed    = "failed"
)

// Histogram buckets: syncs last from seconds (an empty incremental export)
// to hours (the default timeout is 2 h).
var (
	durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}
	pollBuckets     = []float64{1, 2, 3, 5, 10, 20, 50, 100, 200, 500}
	requestBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// MetricsConfig configures NewMetrics.
type MetricsConfig struct {
	// Targets are the configured target names. Their series start at zero
	// (so that rate() and increase() see the first event), and any other
	// name seen in an event is reported as target "" (a label value never
	// comes from an arbitrary subject).
	Targets []string
	// Watermarks, when set, reads a target's stored watermarks (by key); the
	// watermark age is then computed from the store at scrape time, so every
	// replica reports it, also after a restart. Otherwise it comes from the
	// watermarks this process committed.
	Watermarks func(ctx context.Context, target string) (map[string]time.Time, error)
	// ScrapeTimeout bounds the Watermarks reads of one scrape (default 2 s).
	ScrapeTimeout time.Duration
	// Clock tells the time of successes and watermark ages (default: the
	// wall clock).
	Clock clock.Clock
	// RedisRoundTrips, when set, reads the Redis client's round trips so far
	// (a counter kept by a client hook, redisstore.RoundTrips); read at
	// scrape time, so counting costs the hot path one atomic add.
	RedisRoundTrips func() int64
}

// Metrics records what runs do as OpenTelemetry metrics. It implements
// handlers.Observer and is safe for concurrent use.
type Metrics struct {
	cfg MetricsConfig
	// targets indexes the configured targets' label sets in slots; the last
	// slot is the one of label value "" (any other name).
	targets map[string]int

	syncs        metric.Int64Counter
	duration     metric.Float64Histogram
	polls        metric.Int64Histogram
	inFlight     metric.Int64UpDownCounter
	conflicts    metric.Int64Counter
	losses       metric.Int64Counter
	redeliveries metric.Int64Counter
	adoptions    metric.Int64Counter
	dropped      metric.Int64Counter
	requests     metric.Int64Counter
	reqDuration  metric.Float64Histogram
	clockSkew    metric.Float64Gauge
	lag          metric.Float64Histogram
	expectedEnd  metric.Float64Gauge

	// redisPersistence is the start-up check's answer: 0 not checked, 1 off, 2 on.
	redisPersistence atomic.Int32

	// slots hold each label value's attribute sets, made at its first
	// event: an attribute set made on every event sorts, hashes and
	// allocates. Made lazily, they take memory only for the targets that
	// run (a few hundred bytes each); a slot is found by the one map lookup
	// that also checks the target, not by a second (sync.Map) one.
	slots []atomic.Pointer[labelSets]
	// labels holds the label sets by label value when no targets are
	// configured (any name is a label value).
	labels sync.Map

	mu          sync.Mutex
	lastSuccess map[string]time.Time
	watermarks  map[string]time.Time // newest committed by this process, per target
}

var _ handlers.Observer = (*Metrics)(nil)

// opts is one attribute set as the options of a measurement, kept as
// one-element arrays so that a call passes opts.add[:]... : an instrument is
// an interface, so a variadic argument built at the call would escape to
// the heap on every measurement. The SDK neither keeps nor changes them.
type opts struct {
	add [1]metric.AddOption
	rec [1]metric.RecordOption
	all metric.MeasurementOption // for the observations of a scrape
}

func newOpts(kvs ...attribute.KeyValue) *opts {
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return &opts{add: [1]metric.AddOption{o}, rec: [1]metric.RecordOption{o}, all: o}
}

// labelSets are one label value's (target's) attribute sets as measurement
// options.
type labelSets struct {
	name      string
	target    *opts // target
	completed *opts // target, outcome=completed
	failed    *opts // target, outcome=failed

	mu       sync.Mutex
	failedBy map[messages.Reason]*opts // target, outcome=failed, reason
	// reqs holds the options of Pathling requests by kind and status:
	// copied on write (new pairs are rare), so reads take no lock.
	reqs atomic.Pointer[map[reqKey]*reqLabelSets]
}

func newLabelSets(target string) *labelSets {
	tl := labelTarget.String(target)
	return &labelSets{
		name:      target,
		target:    newOpts(tl),
		completed: newOpts(tl, labelOutcome.String(outcomeCompleted)),
		failed:    newOpts(tl, labelOutcome.String(outcomeFailed)),
	}
}

// failedWith is the option of a failure with reason r.
func (ls *labelSets) failedWith(r messages.Reason) *opts {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if o, ok := ls.failedBy[r]; ok {
		return o
	}
	o := newOpts(labelTarget.String(ls.name), labelOutcome.String(outcomeFailed), labelReason.String(string(r)))
	if r.Valid() { // the map stays bounded by the known reasons
		if ls.failedBy == nil {
			ls.failedBy = map[messages.Reason]*opts{}
		}
		ls.failedBy[r] = o
	}
	return o
}

// labelsFor returns the label sets of an event's target: its own if it is
// configured (or none are), else those of label value "".
func (m *Metrics) labelsFor(target string) *labelSets {
	if len(m.targets) == 0 {
		if ls, ok := m.labels.Load(target); ok {
			return ls.(*labelSets)
		}
		ls, _ := m.labels.LoadOrStore(target, newLabelSets(target))
		return ls.(*labelSets)
	}
	i, ok := m.targets[target]
	if !ok {
		i, target = len(m.slots)-1, ""
	}
	slot := &m.slots[i]
	if ls := slot.Load(); ls != nil {
		return ls
	}
	slot.CompareAndSwap(nil, newLabelSets(target))
	return slot.Load()
}

// reqKey identifies the label sets of a Pathling request of a target.
type reqKey struct {
	kind   string
	status int
}

// reqLabelSets are a Pathling request's options: with the status code (the
// counter) and without (the duration).
type reqLabelSets struct{ withCode, noCode *opts }

func (ls *labelSets) requestLabels(kind string, status int) *reqLabelSets {
	k := reqKey{kind, status}
	if p := ls.reqs.Load(); p != nil {
		if v, ok := (*p)[k]; ok {
			return v
		}
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var old map[reqKey]*reqLabelSets
	if p := ls.reqs.Load(); p != nil {
		old = *p
	}
	if v, ok := old[k]; ok {
		return v
	}
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	tl, kl := labelTarget.String(ls.name), labelKind.String(kind)
	v := &reqLabelSets{withCode: newOpts(tl, kl, labelStatusCode.String(code))}
	for ko, o := range old {
		if ko.kind == kind { // the kind's other codes share the set without one
			v.noCode = o.noCode
			break
		}
	}
	if v.noCode == nil {
		v.noCode = newOpts(tl, kl)
	}
	next := make(map[reqKey]*reqLabelSets, len(old)+1)
	maps.Copy(next, old)
	next[k] = v
	ls.reqs.Store(&next)
	return v
}

// NewMetrics creates the instruments on mp. Errors: instrument creation
// failures (a bad name or unit).
func NewMetrics(mp metric.MeterProvider, cfg MetricsConfig) (*Metrics, error) {
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = 2 * time.Second
	}
	m := &Metrics{
		cfg:         cfg,
		targets:     make(map[string]int, len(cfg.Targets)),
		lastSuccess: map[string]time.Time{},
		watermarks:  map[string]time.Time{},
	}
	for _, t := range cfg.Targets {
		if _, ok := m.targets[t]; !ok {
			m.targets[t] = len(m.targets)
		}
	}
	if len(m.targets) > 0 {
		m.slots = make([]atomic.Pointer[labelSets], len(m.targets)+1)
	}
	meter := mp.Meter(MeterName)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	m.syncs = counter(metricSyncs, "{sync}", "Syncs that ended with a published outcome, by target, outcome (completed, failed) and failure reason.")
	m.conflicts = counter(metricLockConflicts, "{conflict}", "Deliveries that found their target's lock held by another request (or queued ahead).")
	m.losses = counter(metricLockLosses, "{loss}", "Runs this replica stopped driving because another driver took its lock over.")
	m.redeliveries = counter(metricRedeliveries, "{delivery}", "SyncRequested deliveries after the first of their message.")
	m.adoptions = counter(metricAdoptions, "{run}", "Runs taken over from a previous driver (crash, shutdown, pause).")
	m.dropped = counter(metricDropped, "{request}", "SyncRequested deliveries dropped without an outcome because their subject names no target to answer on, by reason (extra_tokens, invalid_target, not_requested).")
	m.requests = counter(metricRequests, "{request}", "HTTP requests to Pathling (and its token endpoint), by target, kind and response status code.")
	var err error
	m.duration, err = meter.Float64Histogram(metricSyncDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of runs, from the run's start to its outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	m.polls, err = meter.Int64Histogram(metricSyncPolls, metric.WithUnit("{poll}"),
		metric.WithDescription("Status polls per run."),
		metric.WithExplicitBucketBoundaries(pollBuckets...))
	errs = append(errs, err)
	m.reqDuration, err = meter.Float64Histogram(metricRequestsDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP requests to Pathling (and its token endpoint), by target and kind."),
		metric.WithExplicitBucketBoundaries(requestBuckets...))
	errs = append(errs, err)
	m.clockSkew, err = meter.Float64Gauge(metricClockSkew, metric.WithUnit("s"),
		metric.WithDescription("This replica's clock minus the target Pathling's (its Date header), whole seconds, at the last response read; positive: this replica is ahead."))
	errs = append(errs, err)
	m.lag, err = meter.Float64Histogram(metricDetectionLag, metric.WithUnit("s"),
		metric.WithDescription("How long after a completed job's estimated end (halfway between its last two polls) the poll that saw it done came."),
		metric.WithExplicitBucketBoundaries(lagBuckets...))
	errs = append(errs, err)
	m.expectedEnd, err = meter.Float64Gauge(metricJobExpectedEnd, metric.WithUnit("s"),
		metric.WithDescription("When the target's running Pathling job is expected to end (Unix time), from its history or X-Progress, as of its last poll; 0 when unknown or none runs."))
	errs = append(errs, err)
	m.inFlight, err = meter.Int64UpDownCounter(metricInFlight, metric.WithUnit("{sync}"),
		metric.WithDescription("Runs this replica is driving now."))
	errs = append(errs, err)
	lastSuccess, err := meter.Float64ObservableGauge(metricLastSuccess, metric.WithUnit("s"),
		metric.WithDescription("Unix time of the last successful sync of the target."))
	errs = append(errs, err)
	watermarkAge, err := meter.Float64ObservableGauge(metricWatermarkAge, metric.WithUnit("s"),
		metric.WithDescription("Age of the target's newest committed watermark (what the next since=auto sync starts from)."))
	errs = append(errs, err)
	for _, e := range errs {
		if e != nil {
			return nil, fmt.Errorf("observability: metrics: %w", e)
		}
	}
	if _, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		m.observeGauges(ctx, o, lastSuccess, watermarkAge)
		return nil
	}, lastSuccess, watermarkAge); err != nil {
		return nil, fmt.Errorf("observability: metrics: %w", err)
	}

	persistence, err := meter.Int64ObservableGauge(metricRedisPersistence,
		metric.WithDescription("1 when Redis persists its data (AOF or RDB snapshots, as CONFIG GET reported at start-up), 0 when a Redis restart loses every lock, run record and watermark; absent when it could not be checked."))
	if err != nil {
		return nil, fmt.Errorf("observability: metrics: %w", err)
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		switch m.redisPersistence.Load() {
		case 1:
			o.ObserveInt64(persistence, 0)
		case 2:
			o.ObserveInt64(persistence, 1)
		}
		return nil
	}, persistence); err != nil {
		return nil, fmt.Errorf("observability: metrics: %w", err)
	}

	if cfg.RedisRoundTrips != nil {
		roundTrips, err := meter.Int64ObservableCounter(metricRedisRoundTrips, metric.WithUnit("{round_trip}"),
			metric.WithDescription("Round trips of this replica's Redis client: a command, a script call or a pipeline is one (commands run inside scripts are not)."))
		if err != nil {
			return nil, fmt.Errorf("observability: metrics: %w", err)
		}
		if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(roundTrips, cfg.RedisRoundTrips())
			return nil
		}, roundTrips); err != nil {
			return nil, fmt.Errorf("observability: metrics: %w", err)
		}
	}

	ctx := context.Background()
	for _, r := range []string{messages.SubjectExtraTokens, messages.SubjectInvalidTarget, messages.SubjectNotRequested} {
		m.dropped.Add(ctx, 0, metric.WithAttributes(labelReason.String(r)))
	}
	// Series start at 0 so that increase() sees their first event. For a
	// large fleet only the ones the "no success" alert needs do: the ~18
	// series of every target cost ~75 MB and a slower scrape at 10,000
	// targets; the others then appear with their first event.
	zeroAll := len(cfg.Targets) <= ZeroSeriesTargets
	for _, t := range cfg.Targets {
		tl := labelTarget.String(t)
		m.syncs.Add(ctx, 0, metric.WithAttributes(tl, labelOutcome.String(outcomeCompleted)))
		m.inFlight.Add(ctx, 0, metric.WithAttributes(tl))
		if !zeroAll {
			continue
		}
		for _, r := range messages.Reasons() {
			m.syncs.Add(ctx, 0, metric.WithAttributes(tl, labelOutcome.String(outcomeFailed), labelReason.String(string(r))))
		}
		for _, c := range []metric.Int64Counter{m.conflicts, m.losses, m.redeliveries, m.adoptions} {
			c.Add(ctx, 0, metric.WithAttributes(tl))
		}
	}
	return m, nil
}

// target returns the label value for an event's target.
func (m *Metrics) target(t string) string {
	if _, ok := m.targets[t]; len(m.targets) > 0 && !ok {
		return ""
	}
	return t
}

// ZeroSeriesTargets is the largest number of configured targets for which
// every per-target series starts at 0; beyond it only the completed-syncs
// counter and the in-flight gauge do.
const ZeroSeriesTargets = 1000

// RunEvent records one step of a run.
func (m *Metrics) RunEvent(ctx context.Context, ev handlers.RunEvent) {
	switch {
	case ev.Kind == handlers.EventKickedOff,
		ev.Kind == handlers.EventPolled && ev.Status.State != handlers.JobRunning:
		return // not metrics (one of these per poll of every run in flight)
	}
	ls := m.labelsFor(ev.Target)
	target, tl := ls.name, ls.target
	switch ev.Kind {
	case handlers.EventRedelivered:
		m.redeliveries.Add(ctx, 1, tl.add[:]...)
	case handlers.EventLockConflict:
		m.conflicts.Add(ctx, 1, tl.add[:]...)
	case handlers.EventLockLost:
		m.losses.Add(ctx, 1, tl.add[:]...)
	case handlers.EventAdopted:
		m.adoptions.Add(ctx, 1, tl.add[:]...)
	case handlers.EventStarted:
		m.inFlight.Add(ctx, 1, tl.add[:]...)
	case handlers.EventStopped:
		m.inFlight.Add(ctx, -1, tl.add[:]...)
		m.expectedEnd.Record(ctx, 0, tl.rec[:]...)
	case handlers.EventPolled:
		if ev.Status.State == handlers.JobRunning {
			end := 0.0
			if !ev.ExpectedEnd.IsZero() {
				end = float64(ev.ExpectedEnd.UnixMilli()) / 1000
			}
			m.expectedEnd.Record(ctx, end, tl.rec[:]...)
		}
	case handlers.EventWatermark:
		m.mu.Lock()
		if ev.Watermark.After(m.watermarks[target]) {
			m.watermarks[target] = ev.Watermark
		}
		m.mu.Unlock()
	case handlers.EventDropped:
		// No target label: the subject named none. The reason is one of a fixed few.
		m.dropped.Add(ctx, 1, metric.WithAttributes(labelReason.String(ev.Dropped)))
	case handlers.EventClockSkew:
		m.clockSkew.Record(ctx, ev.ClockSkew.Seconds(), tl.rec[:]...)
	case handlers.EventRefused:
		m.syncs.Add(ctx, 1, ls.failedWith(ev.Reason).add[:]...)
	case handlers.EventFinished:
		outcome := ls.failed
		if ev.Completed {
			outcome = ls.completed
			m.seedLastSuccess(target, m.cfg.Clock.Now()) // first: a scrape seeing the count sees the time
			m.syncs.Add(ctx, 1, outcome.add[:]...)
		} else {
			m.syncs.Add(ctx, 1, ls.failedWith(ev.Reason).add[:]...)
		}
		m.duration.Record(ctx, ev.Duration.Seconds(), outcome.rec[:]...)
		m.polls.Record(ctx, int64(ev.Polls), outcome.rec[:]...)
		if ev.Completed && ev.DetectionLag > 0 {
			m.lag.Record(ctx, ev.DetectionLag.Seconds(), tl.rec[:]...)
		}
	}
}

// SeedLastSuccess sets the target's last success time if t is later than
// the one known (cmd seeds it at start from the stored run records, so the
// gauge survives restarts).
func (m *Metrics) SeedLastSuccess(target string, t time.Time) {
	m.seedLastSuccess(m.target(target), t)
}

// seedLastSuccess is SeedLastSuccess of a label value.
func (m *Metrics) seedLastSuccess(target string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.After(m.lastSuccess[target]) {
		m.lastSuccess[target] = t
	}
}

// PathlingRequest records one HTTP request of the Pathling client (or its
// token source). status is 0 when no response came (err then says why).
func (m *Metrics) PathlingRequest(ctx context.Context, target, kind string, status int, d time.Duration) {
	if status < 0 {
		status = 0 // "error", as no response
	}
	rl := m.labelsFor(target).requestLabels(kind, status)
	m.requests.Add(ctx, 1, rl.withCode.add[:]...)
	m.reqDuration.Record(ctx, d.Seconds(), rl.noCode.rec[:]...)
}

// SetRedisPersistence records the start-up check of Redis' persistence,
// reported as pathling_sync_redis_persistence_enabled (absent until set).
func (m *Metrics) SetRedisPersistence(enabled bool) {
	if enabled {
		m.redisPersistence.Store(2)
	} else {
		m.redisPersistence.Store(1)
	}
}

// observeGauges reports the last success time and the watermark age of each
// target at scrape time.
func (m *Metrics) observeGauges(ctx context.Context, o metric.Observer, lastSuccess, watermarkAge metric.Float64Observable) {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	success := make(map[string]time.Time, len(m.lastSuccess))
	for t, at := range m.lastSuccess {
		success[t] = at
	}
	marks := make(map[string]time.Time, len(m.watermarks))
	for t, wm := range m.watermarks {
		marks[t] = wm
	}
	m.mu.Unlock()

	for t, at := range success {
		o.ObserveFloat64(lastSuccess, float64(at.UnixNano())/1e9, m.labelsFor(t).target.all)
	}
	if m.cfg.Watermarks != nil {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.ScrapeTimeout)
		defer cancel()
		for _, t := range slices.Sorted(maps.Keys(m.targets)) {
			all, err := m.cfg.Watermarks(rctx, t)
			if err != nil {
				continue // the store is unreachable: the last committed value below
			}
			for _, wm := range all {
				if wm.After(marks[t]) {
					marks[t] = wm
				}
			}
		}
	}
	for t, wm := range marks {
		o.ObserveFloat64(watermarkAge, now.Sub(wm).Seconds(), m.labelsFor(t).target.all)
	}
}
