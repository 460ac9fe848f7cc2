// Package handlers holds the sync run state machine: what happens to one
// SyncRequested from delivery to published outcome. It owns the interfaces of
// everything it talks to (ports.go); clients implement them and cmd wires.
package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

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
	// QueueRetry is how long a queued request waits before it asks again.
	QueueRetry time.Duration
	// StoreRetry is the redelivery delay after a store or publish failure.
	StoreRetry time.Duration
	// Driver names this instance in run records (for status).
	Driver string
	Logger *slog.Logger
	// Now and NewID are the clock and run-id source; tests replace them.
	Now   func() time.Time
	NewID func() string
	// Jobs, when set, is the registry of Pathling jobs that keeps runs from
	// taking an earlier run's export for their own and deletes jobs left
	// behind (see Jobs). cmd always sets it; without it neither happens.
	Jobs Jobs
	// Observer, when set, sees each step of every run (metrics).
	Observer Observer
	// TracerProvider makes the spans of each delivery (see tracing.go).
	// Default: none are recorded, but the trace context still flows from a
	// request's traceparent to its outcome's.
	TracerProvider trace.TracerProvider
	// ConsumerGroup names the durable consumer in spans
	// (messaging.consumer.group.name).
	ConsumerGroup string
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
	Duration  time.Duration   // for finished
	Polls     int
	Watermark time.Time // for watermark_committed: the target's stored watermark for the run's key
	Dropped   string    // for dropped: why, one of the messages.Subject* constants
	// ClockSkew, for clock_skew, is the local clock minus Pathling's (its
	// Date header), in whole seconds: positive when this replica is ahead.
	ClockSkew time.Duration
}

// Syncer runs syncs. It is safe for concurrent use: one Handle call per delivery.
type Syncer struct {
	targets    map[string]*Target
	locker     Locker
	runs       Runs
	jobs       Jobs
	pub        Publisher
	subjects   messages.Subjects
	source     string
	lockTTL    time.Duration
	queueRetry time.Duration
	storeRetry time.Duration
	driver     string
	log        *slog.Logger
	now        func() time.Time
	newID      func() string
	obs        Observer
	prop       propagation.TextMapPropagator
	tracer     trace.Tracer

	consumerGroup string
}

// New checks the configuration and returns a Syncer.
func New(cfg Config, locker Locker, runs Runs, pub Publisher) (*Syncer, error) {
	s := &Syncer{
		targets:    make(map[string]*Target, len(cfg.Targets)),
		locker:     locker,
		runs:       runs,
		jobs:       cfg.Jobs,
		pub:        pub,
		subjects:   cfg.Subjects,
		source:     cfg.Source,
		lockTTL:    cfg.LockTTL,
		queueRetry: cfg.QueueRetry,
		storeRetry: cfg.StoreRetry,
		driver:     cfg.Driver,
		log:        cfg.Logger,
		now:        cfg.Now,
		newID:      cfg.NewID,
		obs:        cfg.Observer,
		prop:       propagation.TraceContext{},

		consumerGroup: cfg.ConsumerGroup,
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	s.tracer = tp.Tracer(TracerName)
	if s.subjects.Prefix == "" {
		s.subjects.Prefix = messages.DefaultSubjectPrefix
	}
	if s.source == "" {
		s.source = "pathling-sync"
	}
	if s.lockTTL <= 0 {
		s.lockTTL = 60 * time.Second
	}
	if s.queueRetry <= 0 {
		s.queueRetry = 5 * time.Second
	}
	if s.storeRetry <= 0 {
		s.storeRetry = 5 * time.Second
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.newID == nil {
		s.newID = func() string { return uuid.NewString() }
	}
	if locker == nil || runs == nil || pub == nil {
		return nil, errors.New("handlers: locker, runs and publisher are required")
	}
	s.runs = retryingRuns{Runs: runs, s: s}
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
	return s, nil
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

// Handle runs one SyncRequested delivery to its outcome. It returns
// Ack once the outcome is published, Term for bad input (after publishing a
// SyncFailed), Nak to be asked again later (queue, store trouble), or Leave
// when the lock was lost or the context ended (shutdown): the run's state
// stays in the store for whoever gets the redelivery.
func (s *Syncer) Handle(ctx context.Context, d Delivery) Disposition {
	h := natsHeader(d.Header)
	ctx = s.prop.Extract(ctx, h)
	in := s.intake(d, h)
	ctx, span := s.startConsume(ctx, d, h, in)
	disp := s.handle(ctx, d, in)
	span.SetAttributes(AttrDisposition.String(disp.Action.String()))
	span.End()
	return disp
}

func (s *Syncer) handle(ctx context.Context, d Delivery, in intake) Disposition {
	log := s.log.With("target", in.target, "request_id", in.requestID, "delivery", d.NumDelivered)
	if d.NumDelivered > 1 {
		s.observe(ctx, RunEvent{Kind: EventRedelivered, Target: in.knownTarget(), RequestID: in.requestID})
	}

	if in.bad != nil {
		markOutcome(ctx, true, in.bad.reason)
		if in.target == "" {
			// No target in the subject: an outcome's subject and body would carry an
			// invalid target (the schemas' target pattern has no dots), which its
			// requester's subscription would not match either. Log and count it.
			log.WarnContext(ctx, "dropping request: its subject names no target to answer on",
				"subject", d.Subject, "why", in.dropped, "error", in.bad.message)
			s.observe(ctx, RunEvent{Kind: EventDropped, RequestID: in.requestID, Dropped: in.dropped})
			return Disposition{Action: Term}
		}
		log.WarnContext(ctx, "rejecting request", "reason", in.bad.reason, "error", in.bad.message)
		ev, span := s.failedEvent(ctx, in, nil, in.bad.reason, false, in.bad.message, nil)
		if err := s.publish(ctx, ev, span); err != nil {
			log.ErrorContext(ctx, "publish SyncFailed", "error", err)
			return s.retryLater(ctx)
		}
		s.observe(ctx, RunEvent{Kind: EventRefused, Target: in.knownTarget(), RequestID: in.requestID, Reason: in.bad.reason})
		return Disposition{Action: Term}
	}

	t := in.t
	// A terminal run: re-publish its outcome, free a lock its driver left.
	run, err := s.runs.LoadRun(ctx, t.Name, in.requestID)
	switch {
	case err == nil && run.State.Terminal():
		return s.republish(ctx, log, run)
	case err != nil && !errors.Is(err, ErrRunNotFound):
		log.ErrorContext(ctx, "load run", "error", err)
		return s.retryLater(ctx)
	}

	acq := AcquireRequest{Target: t.Name, RequestID: in.requestID, TTL: s.lockTTL}
	if in.req.Concurrency == "queue" {
		acq.Queue = &QueueTicket{Seq: d.StreamSeq, Deadline: in.requestedAt.Add(in.timeout), Settle: d.NumDelivered == 1}
	}
	run, lease, disp, ok := s.lock(ctx, log, d, in, acq)
	if !ok {
		return disp
	}
	log = log.With("token", lease.Token)
	trace.SpanFromContext(ctx).SetAttributes(AttrRunID.String(run.RunID))
	dr := &driver{s: s, t: t, lease: lease, run: run, log: log.With("run_id", run.RunID)}
	s.observe(ctx, RunEvent{Kind: EventStarted, Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
	defer s.observe(ctx, RunEvent{Kind: EventStopped, Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
	return dr.drive(ctx)
}

// lock takes the target's lock for the request and loads (adopts) or
// creates its run record, under the "lock" span. ok is false when the
// delivery ends here, with disp.
func (s *Syncer) lock(ctx context.Context, log *slog.Logger, d Delivery, in intake, acq AcquireRequest) (run *Run, lease Lease, disp Disposition, ok bool) {
	t := in.t
	lctx, span := s.tracer.Start(ctx, SpanLock, trace.WithAttributes(
		AttrTarget.String(t.Name), attribute.String("pathling_sync.concurrency", in.req.Concurrency)))
	defer span.End()
	granted := s.now()
	lease, err := s.locker.Acquire(lctx, acq)
	if err != nil {
		var held *LockHeldError
		switch {
		case errors.As(err, &held):
			span.SetAttributes(AttrLockResult.String(lockHeld))
		case errors.Is(err, ErrNotYourTurn):
			span.SetAttributes(AttrLockResult.String(lockQueued))
		default:
			span.SetAttributes(AttrLockResult.String(lockError))
			span.RecordError(err)
		}
		return nil, Lease{}, s.notAcquired(ctx, log, d, in, err), false
	}
	span.SetAttributes(AttrLockResult.String(lockAcquired), AttrLockToken.Int64(lease.Token))
	lease.Expires = granted.Add(s.lockTTL)

	run, err = s.runs.LoadRun(lctx, t.Name, in.requestID)
	switch {
	case err == nil && run.State.Terminal():
		_ = s.locker.Release(lctx, lease)
		span.End()
		return nil, Lease{}, s.republish(ctx, log, run), false
	case err == nil:
		log.InfoContext(lctx, "adopting run", "run_id", run.RunID, "state", run.State, "status_url", run.StatusURL)
		span.SetAttributes(AttrAdopted.Bool(true), AttrRunID.String(run.RunID))
		s.observe(ctx, RunEvent{Kind: EventAdopted, Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
	case errors.Is(err, ErrRunNotFound):
		run, err = s.newRun(lctx, in)
		if err != nil {
			log.ErrorContext(lctx, "create run", "error", err)
			endSpan(span, err)
			_ = s.locker.Release(ctx, lease)
			return nil, Lease{}, s.retryLater(ctx), false
		}
		span.SetAttributes(AttrAdopted.Bool(false), AttrRunID.String(run.RunID))
	default:
		log.ErrorContext(lctx, "load run", "error", err)
		endSpan(span, err)
		_ = s.locker.Release(ctx, lease)
		return nil, Lease{}, s.retryLater(ctx), false
	}
	run.Driver = s.driver
	if err := s.save(lctx, lease, run); err != nil {
		endSpan(span, err)
		return nil, Lease{}, s.storeFailed(ctx, log, run, err), false
	}
	return run, lease, Disposition{}, true
}

// intake is a delivery decoded far enough to decide what to do with it.
type intake struct {
	requestID   string
	target      string
	t           *Target
	req         messages.SyncRequested
	exportURL   string
	timeout     time.Duration
	requestedAt time.Time
	bad         *badInput
	dropped     string // why the subject names no target (messages.Subject*), with bad
}

type badInput struct {
	reason  messages.Reason
	message string
}

// knownTarget is the target's name when it is configured, else "" (so that
// metrics never take a label value from an arbitrary subject).
func (in intake) knownTarget() string {
	if in.t == nil {
		return ""
	}
	return in.t.Name
}

func (s *Syncer) intake(d Delivery, h natsHeader) intake {
	var in intake
	env, hasEnv := messages.ReadEnvelope(h)
	in.requestID = messages.RequestID(h, d.Stream, d.StreamSeq)
	in.requestedAt = d.Published
	if hasEnv && !env.Time.IsZero() {
		in.requestedAt = env.Time
	}
	if in.requestedAt.IsZero() {
		in.requestedAt = s.now()
	}
	target, problem := s.subjects.RequestedTarget(d.Subject)
	if problem != "" {
		return intake{requestID: in.requestID, dropped: problem,
			bad: &badInput{messages.ReasonInvalidRequest, s.unroutable(d.Subject, problem)}}
	}
	in.target = target
	bad := func(r messages.Reason, format string, args ...any) intake {
		in.bad = &badInput{r, fmt.Sprintf(format, args...)}
		return in
	}
	if err := env.CheckType(messages.TypeRequested); err != nil {
		return bad(messages.ReasonInvalidRequest, "invalid SyncRequested envelope: %v", err)
	}
	req, err := messages.DecodeRequested(d.Data)
	if err != nil {
		in.req = req
		return bad(messages.ReasonInvalidRequest, "invalid SyncRequested: %v", err)
	}
	in.req = req
	t, ok := s.targets[target]
	if !ok {
		return bad(messages.ReasonUnknownTarget, "unknown target %q (configured: %s)", target, strings.Join(s.Targets(), ", "))
	}
	in.t = t
	in.req = withDefaults(req, t.Defaults)
	if in.req.SaveMode == messages.SaveModeOverwrite && (in.req.Since != "" || in.req.Until != "") {
		return bad(messages.ReasonInvalidRequest, "saveMode overwrite replaces each imported type's whole table: "+
			"with since/until it would keep only the resources changed in that window; use merge for incremental syncs")
	}
	if since, ok := messages.ParseInstant(in.req.Since); ok {
		if now := s.now(); since.After(now.Add(clockAllowance)) {
			return bad(messages.ReasonInvalidRequest, "since: %s is in the future (now is %s): nothing has changed after it yet",
				messages.FormatInstant(since), messages.FormatInstant(now.Truncate(time.Millisecond)))
		}
	}
	if in.req.ExportURL == "" {
		return bad(messages.ReasonInvalidRequest, "exportUrl: required (target %q has no default export URL)", target)
	}
	u, err := t.Pathling.NormalizeExportURL(in.req.ExportURL)
	if err != nil {
		return bad(messages.ReasonInvalidRequest, "exportUrl: %v", err)
	}
	in.exportURL = u
	if !t.exportURLAllowed(in.exportURL) {
		return bad(messages.ReasonExportURLNotAllowed, "exportUrl %q is not among the source URLs allowed for target %q", messages.RedactURL(in.exportURL), target)
	}
	in.timeout = t.Timeout
	if in.req.Timeout != "" {
		d, err := time.ParseDuration(in.req.Timeout)
		if err != nil || d <= 0 {
			return bad(messages.ReasonInvalidRequest, "timeout: %q is not a positive duration", in.req.Timeout)
		}
		in.timeout = d
	}
	if in.req.Since == "auto" && in.req.Until != "" {
		return bad(messages.ReasonInvalidRequest, `until: cannot be combined with since "auto"`)
	}
	return in
}

// clockAllowance is how far in the future a since may lie: the requester's
// clock may run ahead of ours.
const clockAllowance = time.Minute

// unroutable says why a subject names no target, for the log.
func (s *Syncer) unroutable(subject, problem string) string {
	rule := fmt.Sprintf("SyncRequested subjects are %s, the target one token matching [A-Za-z0-9_-]{1,64}",
		s.subjects.Requested("<target>"))
	switch problem {
	case messages.SubjectExtraTokens:
		return fmt.Sprintf("subject %q has tokens after the target: %s", subject, rule)
	case messages.SubjectInvalidTarget:
		return fmt.Sprintf("subject %q names no valid target: %s", subject, rule)
	default:
		return fmt.Sprintf("subject %q is not a SyncRequested subject: %s", subject, rule)
	}
}

// withDefaults fills the request fields left empty from the target's defaults.
func withDefaults(r, def messages.SyncRequested) messages.SyncRequested {
	pick := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	r.ExportURL = pick(r.ExportURL, def.ExportURL)
	r.SaveMode = pick(r.SaveMode, pick(def.SaveMode, "merge"))
	if r.SaveMode != messages.SaveModeOverwrite {
		// A default since/until never turns an overwrite into a partial
		// export: overwrite replaces whole tables with what was exported.
		r.Since = pick(r.Since, def.Since)
		r.Until = pick(r.Until, def.Until)
	}
	r.Concurrency = pick(r.Concurrency, pick(def.Concurrency, "forbid"))
	r.Timeout = pick(r.Timeout, def.Timeout)
	if r.Types == nil {
		r.Types = def.Types
	}
	if r.TypeFilters == nil {
		r.TypeFilters = def.TypeFilters
	}
	if r.Elements == nil {
		r.Elements = def.Elements
	}
	if r.IncludeAssociatedData == nil {
		r.IncludeAssociatedData = def.IncludeAssociatedData
	}
	return r
}

// newRun builds the record of a new run, resolving since "auto" against the
// watermark now, once, so that every later attempt re-kicks identically.
func (s *Syncer) newRun(ctx context.Context, in intake) (*Run, error) {
	now := s.now()
	p := ImportParams{
		ExportURL:             in.exportURL,
		SaveMode:              in.req.SaveMode,
		Types:                 in.req.Types,
		Elements:              in.req.Elements,
		TypeFilters:           in.req.TypeFilters,
		IncludeAssociatedData: in.req.IncludeAssociatedData,
	}
	key := WatermarkKey(p)
	switch in.req.Since {
	case "":
	case "auto":
		wm, ok, err := s.runs.Watermark(ctx, in.t.Name, key)
		if err != nil {
			return nil, fmt.Errorf("read watermark: %w", err)
		}
		if ok {
			p.Since = &wm
		}
	default:
		since, err := time.Parse(time.RFC3339Nano, in.req.Since)
		if err != nil {
			return nil, fmt.Errorf("since: %w", err)
		}
		p.Since = &since
	}
	if in.req.Until != "" {
		until, err := time.Parse(time.RFC3339Nano, in.req.Until)
		if err != nil {
			return nil, fmt.Errorf("until: %w", err)
		}
		p.Until = &until
	}
	return &Run{
		RunID:        s.newID(),
		RequestID:    in.requestID,
		Target:       in.t.Name,
		State:        RunStarting,
		Request:      in.req,
		Params:       p,
		WatermarkKey: key,
		StartedAt:    now,
		UpdatedAt:    now,
		Deadline:     now.Add(in.timeout),
	}, nil
}

// settleDelay is how long a newly queued request waits before it asks for
// the lock: long enough for requests fetched in the same batch to queue up.
const settleDelay = 250 * time.Millisecond

func (s *Syncer) notAcquired(ctx context.Context, log *slog.Logger, d Delivery, in intake, err error) Disposition {
	var held *LockHeldError
	waiting := errors.As(err, &held) || errors.Is(err, ErrNotYourTurn)
	if !waiting {
		log.ErrorContext(ctx, "acquire lock", "error", err)
		return s.retryLater(ctx)
	}
	s.observe(ctx, RunEvent{Kind: EventLockConflict, Target: in.target, RequestID: in.requestID})
	if in.req.Concurrency == "queue" {
		if s.now().Before(in.requestedAt.Add(in.timeout)) {
			if held == nil && d.NumDelivered == 1 {
				// Just took its place in the queue: look again soon.
				return Disposition{Action: Nak, Delay: min(s.queueRetry, settleDelay)}
			}
			return Disposition{Action: Nak, Delay: s.queueRetry}
		}
		msg := fmt.Sprintf("gave up waiting in the queue of target %q after %s", in.target, in.timeout)
		ev, span := s.failedEvent(ctx, in, nil, messages.ReasonTimeout, true, msg, nil)
		return s.refuse(ctx, log, in, ev, span, messages.ReasonTimeout)
	}
	running := ""
	if held != nil {
		running = held.RequestID
	}
	msg := fmt.Sprintf("target %q is busy with request %q (concurrency forbid)", in.target, running)
	ev, span := s.failedEvent(ctx, in, nil, messages.ReasonConflict, true, msg, func(f *messages.SyncFailed) { f.RunningRequestID = running })
	return s.refuse(ctx, log, in, ev, span, messages.ReasonConflict)
}

// refuse ends a request that never ran with a SyncFailed. The outcome is
// recorded first, so that a redelivery re-publishes it rather than running
// the request once the target is free.
func (s *Syncer) refuse(ctx context.Context, log *slog.Logger, in intake, ev Event, span trace.Span, reason messages.Reason) Disposition {
	now := s.now()
	rec := &Run{RequestID: in.requestID, Target: in.target, State: RunFailed, Request: in.req,
		StartedAt: now, UpdatedAt: now, FinishedAt: now, Outcome: &ev}
	wrote, err := s.runs.RecordOutcome(ctx, rec)
	if err != nil {
		log.ErrorContext(ctx, "record refusal", "error", err)
		endSpan(span, err)
		return s.retryLater(ctx)
	}
	if !wrote {
		if run, err := s.runs.LoadRun(ctx, in.target, in.requestID); err == nil && run.State.Terminal() {
			// An earlier delivery recorded an outcome: that one goes out, not this one.
			span.SetAttributes(attribute.Bool("pathling_sync.superseded", true))
			span.End()
			return s.republish(ctx, log, run)
		}
	}
	markOutcome(ctx, true, reason)
	if err := s.publish(ctx, ev, span); err != nil {
		log.ErrorContext(ctx, "publish refusal", "error", err)
		return s.retryLater(ctx)
	}
	s.observe(ctx, RunEvent{Kind: EventRefused, Target: in.target, RequestID: in.requestID, Reason: reason})
	_ = s.locker.ReleaseFinished(ctx, in.target, in.requestID) // drops a queue ticket
	return Disposition{Action: Ack}
}

// republish sends a terminal run's stored outcome again (its id makes it a
// duplicate for JetStream and for consumers) and frees a lock left behind.
func (s *Syncer) republish(ctx context.Context, log *slog.Logger, run *Run) Disposition {
	if run.Outcome == nil {
		log.ErrorContext(ctx, "terminal run without outcome", "run_id", run.RunID)
		return Disposition{Action: Ack}
	}
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(AttrRepublished.Bool(true), AttrOutcome.String(string(run.State)))
	if run.RunID != "" {
		span.SetAttributes(AttrRunID.String(run.RunID))
	}
	if err := s.publish(ctx, *run.Outcome, nil); err != nil {
		log.ErrorContext(ctx, "re-publish outcome", "error", err)
		return s.retryLater(ctx)
	}
	if err := s.locker.ReleaseFinished(ctx, run.Target, run.RequestID); err != nil {
		log.WarnContext(ctx, "release finished run's lock", "error", err)
	}
	log.InfoContext(ctx, "re-published outcome of finished run", "run_id", run.RunID, "type", run.Outcome.Envelope.Type)
	return Disposition{Action: Ack}
}

func (s *Syncer) save(ctx context.Context, l Lease, r *Run) error {
	r.UpdatedAt = s.now()
	r.Token = l.Token
	return s.runs.SaveRun(ctx, l, r)
}

// storeFailed decides after a failed store write: a lost lock means another
// driver owns the run (do nothing); anything else (also a lock that vanished
// again and again), try again later.
func (s *Syncer) storeFailed(ctx context.Context, log *slog.Logger, run *Run, err error) Disposition {
	if errors.Is(err, ErrLockLost) {
		log.WarnContext(ctx, "lock lost; leaving the run to its new driver", "run_id", run.RunID)
		trace.SpanFromContext(ctx).AddEvent("lock lost")
		s.observe(ctx, RunEvent{Kind: EventLockLost, Target: run.Target, RequestID: run.RequestID, RunID: run.RunID})
		return Disposition{Action: Leave}
	}
	if ctx.Err() != nil {
		return s.retryLater(ctx)
	}
	log.ErrorContext(ctx, "store write failed", "run_id", run.RunID, "error", err)
	return s.retryLater(ctx)
}

// retryLater asks for redelivery: at once when shutting down (another
// replica adopts), after StoreRetry otherwise.
func (s *Syncer) retryLater(ctx context.Context) Disposition {
	if ctx.Err() != nil {
		return Disposition{Action: Nak}
	}
	return Disposition{Action: Nak, Delay: s.storeRetry}
}

func (s *Syncer) observe(ctx context.Context, ev RunEvent) {
	if s.obs != nil {
		s.obs.RunEvent(ctx, ev)
	}
}

// envelope builds an outcome's CloudEvents envelope, continuing the trace in ctx.
func (s *Syncer) envelope(ctx context.Context, id, typ, target string) messages.Envelope {
	h := natsHeader{}
	s.prop.Inject(ctx, h)
	return messages.Envelope{
		ID:          id,
		Source:      s.source,
		Type:        typ,
		Subject:     target,
		ContentType: "application/json",
		Time:        s.now().UTC(),
		TraceParent: h.Get("traceparent"),
		TraceState:  h.Get("tracestate"),
	}
}

// failedEvent builds the SyncFailed of a request that did not run, with its
// producer span (to be ended by publish).
func (s *Syncer) failedEvent(ctx context.Context, in intake, run *Run, reason messages.Reason, retryable bool, msg string, edit func(*messages.SyncFailed)) (Event, trace.Span) {
	f := messages.SyncFailed{
		RequestID:     in.requestID,
		Target:        in.target,
		ExportURL:     messages.RedactURL(in.exportURL),
		SaveMode:      in.req.SaveMode,
		Types:         in.req.Types,
		Since:         in.req.Since,
		Until:         in.req.Until,
		Reason:        reason,
		Retryable:     retryable,
		Message:       msg,
		CorrelationID: in.req.CorrelationID,
		RequestedBy:   in.req.RequestedBy,
	}
	if f.ExportURL == "" {
		// Refused before normalization (say, for its userinfo): show it without credentials.
		f.ExportURL = messages.RedactURL(in.req.ExportURL)
	}
	if run != nil {
		f.RunID = run.RunID
		f.Attempts = run.Attempts
	}
	if edit != nil {
		edit(&f)
	}
	body, _ := json.Marshal(f)
	subject, id := s.subjects.Failed(in.target), messages.FailedID(in.requestID)
	pctx, span := s.startPublish(ctx, subject, id, messages.TypeFailed, in.target)
	return Event{
		Subject:  subject,
		Envelope: s.envelope(pctx, id, messages.TypeFailed, in.target),
		Body:     body,
	}, span
}

// natsHeader adapts NATS headers (case-sensitive keys) to messages.Header and
// to OpenTelemetry's TextMapCarrier.
type natsHeader map[string][]string

func (h natsHeader) Get(k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h natsHeader) Set(k, v string) { h[k] = []string{v} }

func (h natsHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
