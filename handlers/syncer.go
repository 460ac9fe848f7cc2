// Package handlers holds the sync run state machine: what happens to one
// SyncRequested from delivery to published outcome. It owns the interfaces of
// everything it talks to (ports.go); clients implement them and cmd wires.
//
// A delivery's path through the files:
//
//	sync.go        intake and lock: decode, check, take the target's lock,
//	               load (adopt) or create the run record; or refuse at once
//	driver.go      a run's life: kick off (or adopt the job), poll, then
//	               finish: watermark, terminal record holding the outcome,
//	               DELETE the job, release the lock, publish the outcome
//	outcome.go     builds every outcome event and publishes it
//	polling.go     when the next poll of a job comes: planned from the
//	               history of its (target, shape) (pollplan) or the seed
//	               cadence; a completed job's duration joins the history
//	watermark.go   the watermark's key and when a run may move it
//	storeretry.go  fenced store writes retried while the lease is valid
//	tracing.go     the spans of a delivery
//	syncer.go      Config, New, and the deps the Syncer and drivers share
//
// A driver releases the lock before it publishes the outcome, so that
// whoever reacts to the outcome finds the target free; the terminal record,
// written before both, is what a redelivery re-publishes after a crash in
// between. That re-publish (sync.go: republish) comes before it frees a lock
// the dead driver left (LockRecovery.ReleaseFinished), unless the delivery
// had taken the lock itself, which it releases first.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// Config configures a Syncer.
type Config struct {
	Targets  []Target
	Subjects messages.Subjects
	// Source is the CloudEvents source of published outcomes.
	Source string
	// LockTTL is the target lock's time to live, renewed every third of it.
	LockTTL time.Duration
	// QueueRetry is how long a queued request waits before it asks again
	// (when no release of the lock is announced sooner: Ports.Releases).
	QueueRetry time.Duration
	// QueueWaiters bounds the queued requests that wait in this process for
	// their target's lock to be released (Ports.Releases), each holding a
	// worker slot: at most QueueWaiters in all (default 64) and
	// QueueWaitersPerTarget per target (default 4), earliest in the queue
	// first. The others are redelivered after QueueRetry.
	QueueWaiters          int
	QueueWaitersPerTarget int
	// StoreRetry is the redelivery delay after a store or publish failure.
	StoreRetry time.Duration
	// Driver names this instance in run records (for status).
	Driver string
	Logger *slog.Logger
	// Clock is the time source (default clock.System{}) and NewID the
	// run-id source; tests replace them. A run's waits between polls and
	// lock renewals are Clock.After; other waits use real timers.
	Clock clock.Clock
	NewID func() string
	// Observer, when set, sees each step of every run (metrics).
	Observer Observer
	// TracerProvider makes the spans of each delivery (see tracing.go).
	// Default: none are recorded, but the trace context still flows from a
	// request's traceparent to its outcome's.
	TracerProvider trace.TracerProvider
	// ConsumerGroup names the durable consumer in spans
	// (messaging.consumer.group.name).
	ConsumerGroup string
	// Durations, when set, keeps the durations of finished jobs per target
	// and request shape, and the targets whose PollPolicy is PollHistory
	// plan their polls from them (polling.go). Nil: every target polls at
	// its seed cadence (Target.Poll) and nothing is recorded. Wrap a store
	// in a cache (redisstore.DurationCache): it is read before every job.
	Durations Durations
}

// Observer is told what runs do. Every method must be cheap and safe for
// concurrent use.
type Observer interface {
	RunEvent(ctx context.Context, ev RunEvent)
}

// Kinds of RunEvent.
const (
	EventRedelivered  = "redelivered"   // a delivery after the first of its message
	EventLockConflict = "lock_conflict" // the target's lock is held by another request (or queued ahead)
	EventAdopted      = "adopted"       // a delivery took over a run a previous driver left
	EventStarted      = "started"       // this replica starts driving a run (pairs with EventStopped)
	EventKickedOff    = "kicked_off"    // Pathling accepted a kick-off
	EventPolled       = "polled"        // a job status was read (Status, Polls)
	EventWatermark    = "watermark_committed"
	EventLockLost     = "lock_lost" // another driver took the run over: this one stops
	EventFinished     = "finished"  // a run's outcome was published (Completed, Reason, Duration, Polls)
	EventRefused      = "refused"   // a SyncFailed was published for a request that never ran (Reason)
	EventStopped      = "stopped"   // this replica stopped driving a run, whatever the result
	// EventDropped: a delivery terminated without an outcome, because its
	// subject names no target an outcome could be published for (Dropped).
	EventDropped = "dropped"
)

// EventClockSkew: a Pathling response's Date header was read (ClockSkew).
const EventClockSkew = "clock_skew"

// RunEvent is one observable step of a run. Target is empty for a request
// naming no configured target.
type RunEvent struct {
	Kind      string // one of the Event* constants
	Target    string
	RequestID string
	RunID     string
	Reason    messages.Reason // for finished failures and refusals
	Completed bool            // for finished
	Status    JobStatus       // for polled
	// ExpectedEnd, for polled (job still running), is when the job is
	// expected to end by its history or X-Progress; zero when unknown.
	ExpectedEnd time.Time
	Duration    time.Duration // for finished
	Polls       int
	// DetectionLag, for a finished run that completed and whose job's
	// kick-off this replica saw, is how long after the job's estimated end
	// the poll that saw it done came (half the last wait: the end is
	// estimated halfway between the last two polls); 0 when unknown.
	DetectionLag time.Duration
	Watermark    time.Time // for watermark_committed: the target's stored watermark for the run's key
	Dropped      string    // for dropped: why, one of the messages.Subject* constants
	// ClockSkew, for clock_skew, is the local clock minus Pathling's (its
	// Date header), in whole seconds: positive when this replica is ahead.
	ClockSkew time.Duration
}

// Syncer runs syncs. It is safe for concurrent use: one Handle call per delivery.
type Syncer struct {
	deps
	targets       map[string]*Target
	subjects      messages.Subjects
	queueRetry    time.Duration
	releases      Releases   // nil: queued requests are redelivered after queueRetry
	precedence    Precedence // nil: every new queued request settles first
	room          *waitRoom  // who may wait here for a release
	driver        string
	newID         func() string
	prop          propagation.TextMapPropagator
	consumerGroup string
}

// deps is what handling a delivery needs besides the delivery and its
// target, shared by the Syncer (intake and lock: sync.go) and each run's
// driver (driver.go): the store ports, the lock's settings, the clock, the
// logger, the observer, the tracer and the outcome publisher.
type deps struct {
	locker   Locker
	recovery LockRecovery
	runs     Runs // SaveRun and Finish retried while the lease is valid (storeretry.go)
	marks    Watermarks
	jobs     Jobs // nil: no job registry
	outcomes *outcomes

	// lockTTL is the target lock's time to live, renewed every third of it.
	lockTTL time.Duration
	// storeRetry is the redelivery delay after a store or publish failure.
	storeRetry time.Duration
	clock      clock.Clock
	logger     *slog.Logger
	obs        Observer
	tracer     trace.Tracer
	plans      *plans      // nil: no history; every job polls at the seed cadence
	held       *heldLocks  // the locks this replica's drivers hold (held.go)
	parked     *parkedRuns // the runs parked between steps (park.go)
}

// New checks the configuration and the ports and returns a Syncer.
func New(cfg Config, p Ports) (*Syncer, error) {
	if p.Locker == nil || p.Recovery == nil || p.Runs == nil || p.Watermarks == nil || p.Publisher == nil {
		return nil, errors.New("handlers: the locker, lock recovery, runs, watermarks and publisher ports are required")
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	s := &Syncer{
		deps: deps{
			locker:     p.Locker,
			recovery:   p.Recovery,
			jobs:       p.Jobs,
			lockTTL:    positive(cfg.LockTTL, 60*time.Second),
			storeRetry: positive(cfg.StoreRetry, 5*time.Second),
			clock:      clock.Or(cfg.Clock),
			logger:     cfg.Logger,
			obs:        cfg.Observer,
			tracer:     tp.Tracer(TracerName),
			plans:      newPlans(cfg.Durations),
			held:       newHeldLocks(),
			parked:     newParkedRuns(),
		},
		targets:       make(map[string]*Target, len(cfg.Targets)),
		subjects:      cfg.Subjects,
		queueRetry:    positive(cfg.QueueRetry, 5*time.Second),
		releases:      p.Releases,
		precedence:    p.Precedence,
		room:          newWaitRoom(positiveInt(cfg.QueueWaiters, DefaultQueueWaiters), positiveInt(cfg.QueueWaitersPerTarget, DefaultQueueWaitersPerTarget)),
		driver:        cfg.Driver,
		newID:         cfg.NewID,
		prop:          propagation.TraceContext{},
		consumerGroup: cfg.ConsumerGroup,
	}
	if s.subjects.Prefix == "" {
		s.subjects.Prefix = messages.DefaultSubjectPrefix
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.newID == nil {
		s.newID = func() string { return uuid.NewString() }
	}
	s.runs = retryingRuns{Runs: p.Runs, d: &s.deps}
	s.marks = p.Watermarks
	s.outcomes = &outcomes{
		pub:      p.Publisher,
		subjects: s.subjects,
		source:   cfg.Source,
		clock:    s.clock,
		prop:     s.prop,
		tracer:   s.tracer,
	}
	if s.outcomes.source == "" {
		s.outcomes.source = "pathling-sync"
	}
	for i := range cfg.Targets {
		t := cfg.Targets[i]
		t.setDefaults()
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("handlers: %w", err)
		}
		if _, dup := s.targets[t.Name]; dup {
			return nil, fmt.Errorf("handlers: target %q configured twice", t.Name)
		}
		s.targets[t.Name] = &t
	}
	s.outcomes.names = make(map[string]*targetNames, len(s.targets))
	for name := range s.targets {
		s.outcomes.names[name] = newTargetNames(s.subjects, name)
	}
	return s, nil
}

// positive is d, or def when d is not positive (unset).
func positive(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// positiveInt is n, or def when n is not positive (unset).
func positiveInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// Targets returns the configured target names, sorted.
func (s *Syncer) Targets() []string {
	names := make([]string, 0, len(s.targets))
	for n := range s.targets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (d *deps) now() time.Time { return d.clock.Now() }

func (d *deps) observe(ctx context.Context, ev RunEvent) {
	if d.obs != nil {
		d.obs.RunEvent(ctx, ev)
	}
}

// save writes the run record under the lease (fenced, retried while the
// lease is valid), stamped with the time and the lease's token.
func (d *deps) save(ctx context.Context, l Lease, r *Run) error {
	r.UpdatedAt = d.now()
	r.Token = l.Token
	return d.runs.SaveRun(ctx, l, r)
}

// storeFailed decides after a failed store write: a lost lock means another
// driver owns the run (Leave: its delivery settles the message); anything
// else (also a lock that vanished again and again), try again later.
func (d *deps) storeFailed(ctx context.Context, log *slog.Logger, run *Run, err error) Disposition {
	if errors.Is(err, ErrLockLost) {
		log.WarnContext(ctx, "lock lost; leaving the run to its new driver", "run_id", run.RunID)
		trace.SpanFromContext(ctx).AddEvent("lock lost")
		d.observe(ctx, RunEvent{Kind: EventLockLost, Target: run.Target, RequestID: run.RequestID, RunID: run.RunID})
		return Disposition{Action: Leave}
	}
	if ctx.Err() != nil {
		return d.retryLater(ctx)
	}
	log.ErrorContext(ctx, "store write failed", "run_id", run.RunID, "error", err)
	return d.retryLater(ctx)
}

// retryLater asks for redelivery: at once when shutting down (another
// replica adopts), after StoreRetry otherwise.
func (d *deps) retryLater(ctx context.Context) Disposition {
	if ctx.Err() != nil {
		return Disposition{Action: Nak}
	}
	return Disposition{Action: Nak, Delay: d.storeRetry}
}
