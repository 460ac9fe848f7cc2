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
	"go.opentelemetry.io/otel/propagation"

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
	// Observer, when set, sees each step of every run (metrics, traces).
	Observer Observer
}

// Observer is told what runs do. Every method must be cheap and safe for
// concurrent use.
type Observer interface {
	RunEvent(ctx context.Context, ev RunEvent)
}

// RunEvent is one observable step of a run.
type RunEvent struct {
	Kind      string // "adopted", "kicked_off", "polled", "lock_conflict", "lock_lost", "finished", "redelivered"
	Target    string
	RequestID string
	RunID     string
	Reason    messages.Reason // for finished failures
	Completed bool            // for finished
	Status    JobStatus       // for polled
	Duration  time.Duration   // for finished
	Polls     int
}

// Syncer runs syncs. It is safe for concurrent use: one Handle call per delivery.
type Syncer struct {
	targets    map[string]*Target
	locker     Locker
	runs       Runs
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
}

// New checks the configuration and returns a Syncer.
func New(cfg Config, locker Locker, runs Runs, pub Publisher) (*Syncer, error) {
	s := &Syncer{
		targets:    make(map[string]*Target, len(cfg.Targets)),
		locker:     locker,
		runs:       runs,
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
	}
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
	log := s.log.With("target", in.target, "request_id", in.requestID, "delivery", d.NumDelivered)
	if d.NumDelivered > 1 {
		s.observe(ctx, RunEvent{Kind: "redelivered", Target: in.target, RequestID: in.requestID})
	}

	if in.bad != nil {
		log.Warn("rejecting request", "reason", in.bad.reason, "error", in.bad.message)
		if in.target == "" {
			// No target in the subject: nowhere to publish. Nothing sane can come of it.
			return Disposition{Action: Term}
		}
		ev := s.failedEvent(ctx, in, nil, in.bad.reason, false, in.bad.message, nil)
		if err := s.pub.Publish(ctx, ev); err != nil {
			log.Error("publish SyncFailed", "error", err)
			return s.retryLater(ctx)
		}
		return Disposition{Action: Term}
	}

	t := in.t
	// A terminal run: re-publish its outcome, free a lock its driver left.
	run, err := s.runs.LoadRun(ctx, t.Name, in.requestID)
	switch {
	case err == nil && run.State.Terminal():
		return s.republish(ctx, log, run)
	case err != nil && !errors.Is(err, ErrRunNotFound):
		log.Error("load run", "error", err)
		return s.retryLater(ctx)
	}

	acq := AcquireRequest{Target: t.Name, RequestID: in.requestID, TTL: s.lockTTL}
	if in.req.Concurrency == "queue" {
		acq.Queue = &QueueTicket{Seq: d.StreamSeq, Deadline: in.requestedAt.Add(in.timeout), Settle: d.NumDelivered == 1}
	}
	lease, err := s.locker.Acquire(ctx, acq)
	if err != nil {
		return s.notAcquired(ctx, log, d, in, err)
	}
	log = log.With("token", lease.Token)

	run, err = s.runs.LoadRun(ctx, t.Name, in.requestID)
	switch {
	case err == nil && run.State.Terminal():
		_ = s.locker.Release(ctx, lease)
		return s.republish(ctx, log, run)
	case err == nil:
		log.Info("adopting run", "run_id", run.RunID, "state", run.State, "status_url", run.StatusURL)
		s.observe(ctx, RunEvent{Kind: "adopted", Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
	case errors.Is(err, ErrRunNotFound):
		run, err = s.newRun(ctx, in)
		if err != nil {
			log.Error("create run", "error", err)
			_ = s.locker.Release(ctx, lease)
			return s.retryLater(ctx)
		}
	default:
		log.Error("load run", "error", err)
		_ = s.locker.Release(ctx, lease)
		return s.retryLater(ctx)
	}
	run.Driver = s.driver
	if err := s.save(ctx, lease, run); err != nil {
		return s.storeFailed(ctx, log, run, err)
	}
	dr := &driver{s: s, t: t, lease: lease, run: run, log: log.With("run_id", run.RunID)}
	return dr.drive(ctx)
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
}

type badInput struct {
	reason  messages.Reason
	message string
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
	kind, target, ok := s.subjects.TargetOf(d.Subject)
	if !ok || kind != messages.KindRequested {
		return intake{requestID: in.requestID, bad: &badInput{messages.ReasonInvalidRequest, fmt.Sprintf("subject %q is not a SyncRequested subject", d.Subject)}}
	}
	in.target = target
	bad := func(r messages.Reason, format string, args ...any) intake {
		in.bad = &badInput{r, fmt.Sprintf(format, args...)}
		return in
	}
	if !messages.ValidTarget(target) {
		return bad(messages.ReasonUnknownTarget, "target %q: name must match [A-Za-z0-9_-]{1,64}", target)
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
	if in.req.ExportURL == "" {
		return bad(messages.ReasonInvalidRequest, "exportUrl: required (target %q has no default export URL)", target)
	}
	in.exportURL = in.req.ExportURL
	if t.NormalizeExportURL != nil {
		u, err := t.NormalizeExportURL(in.req.ExportURL)
		if err != nil {
			return bad(messages.ReasonInvalidRequest, "exportUrl: %v", err)
		}
		in.exportURL = u
	}
	if !t.exportURLAllowed(in.exportURL) {
		return bad(messages.ReasonExportURLNotAllowed, "exportUrl %q is not among the source URLs allowed for target %q", in.exportURL, target)
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
	r.Since = pick(r.Since, def.Since)
	r.Until = pick(r.Until, def.Until)
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
	key := WatermarkKey(in.exportURL, in.req.Types, in.req.TypeFilters)
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

// WatermarkKey names the watermark a sync reads and writes: one per export
// URL, type set and type filters, so that a Patient-only sync never moves the
// watermark of a sync of everything.
func WatermarkKey(exportURL string, types, typeFilters []string) string {
	t := slices.Clone(types)
	slices.Sort(t)
	f := slices.Clone(typeFilters)
	slices.Sort(f)
	return exportURL + "|types=" + strings.Join(t, ",") + "|filters=" + strings.Join(f, "&")
}

// settleDelay is how long a newly queued request waits before it asks for
// the lock: long enough for requests fetched in the same batch to queue up.
const settleDelay = 250 * time.Millisecond

func (s *Syncer) notAcquired(ctx context.Context, log *slog.Logger, d Delivery, in intake, err error) Disposition {
	var held *LockHeldError
	waiting := errors.As(err, &held) || errors.Is(err, ErrNotYourTurn)
	if !waiting {
		log.Error("acquire lock", "error", err)
		return s.retryLater(ctx)
	}
	s.observe(ctx, RunEvent{Kind: "lock_conflict", Target: in.target, RequestID: in.requestID})
	if in.req.Concurrency == "queue" {
		if s.now().Before(in.requestedAt.Add(in.timeout)) {
			if held == nil && d.NumDelivered == 1 {
				// Just took its place in the queue: look again soon.
				return Disposition{Action: Nak, Delay: min(s.queueRetry, settleDelay)}
			}
			return Disposition{Action: Nak, Delay: s.queueRetry}
		}
		msg := fmt.Sprintf("gave up waiting in the queue of target %q after %s", in.target, in.timeout)
		ev := s.failedEvent(ctx, in, nil, messages.ReasonTimeout, true, msg, nil)
		return s.refuse(ctx, log, in, ev)
	}
	running := ""
	if held != nil {
		running = held.RequestID
	}
	msg := fmt.Sprintf("target %q is busy with request %q (concurrency forbid)", in.target, running)
	ev := s.failedEvent(ctx, in, nil, messages.ReasonConflict, true, msg, func(f *messages.SyncFailed) { f.RunningRequestID = running })
	return s.refuse(ctx, log, in, ev)
}

// refuse ends a request that never ran with a SyncFailed. The outcome is
// recorded first, so that a redelivery re-publishes it rather than running
// the request once the target is free.
func (s *Syncer) refuse(ctx context.Context, log *slog.Logger, in intake, ev Event) Disposition {
	now := s.now()
	rec := &Run{RequestID: in.requestID, Target: in.target, State: RunFailed, Request: in.req,
		StartedAt: now, UpdatedAt: now, FinishedAt: now, Outcome: &ev}
	wrote, err := s.runs.RecordOutcome(ctx, rec)
	if err != nil {
		log.Error("record refusal", "error", err)
		return s.retryLater(ctx)
	}
	if !wrote {
		if run, err := s.runs.LoadRun(ctx, in.target, in.requestID); err == nil && run.State.Terminal() {
			return s.republish(ctx, log, run)
		}
	}
	if err := s.pub.Publish(ctx, ev); err != nil {
		log.Error("publish refusal", "error", err)
		return s.retryLater(ctx)
	}
	_ = s.locker.ReleaseFinished(ctx, in.target, in.requestID) // drops a queue ticket
	return Disposition{Action: Ack}
}

// republish sends a terminal run's stored outcome again (its id makes it a
// duplicate for JetStream and for consumers) and frees a lock left behind.
func (s *Syncer) republish(ctx context.Context, log *slog.Logger, run *Run) Disposition {
	if run.Outcome == nil {
		log.Error("terminal run without outcome", "run_id", run.RunID)
		return Disposition{Action: Ack}
	}
	if err := s.pub.Publish(ctx, *run.Outcome); err != nil {
		log.Error("re-publish outcome", "error", err)
		return s.retryLater(ctx)
	}
	if err := s.locker.ReleaseFinished(ctx, run.Target, run.RequestID); err != nil {
		log.Warn("release finished run's lock", "error", err)
	}
	log.Info("re-published outcome of finished run", "run_id", run.RunID, "type", run.Outcome.Envelope.Type)
	return Disposition{Action: Ack}
}

func (s *Syncer) save(ctx context.Context, l Lease, r *Run) error {
	r.UpdatedAt = s.now()
	r.Token = l.Token
	return s.runs.SaveRun(ctx, l, r)
}

// storeFailed decides after a failed store write: a lost lock means another
// driver owns the run (do nothing); anything else, try again later.
func (s *Syncer) storeFailed(ctx context.Context, log *slog.Logger, run *Run, err error) Disposition {
	if errors.Is(err, ErrLockLost) {
		log.Warn("lock lost; leaving the run to its new driver", "run_id", run.RunID)
		s.observe(ctx, RunEvent{Kind: "lock_lost", Target: run.Target, RequestID: run.RequestID, RunID: run.RunID})
		return Disposition{Action: Leave}
	}
	if ctx.Err() != nil {
		return s.retryLater(ctx)
	}
	log.Error("store write failed", "run_id", run.RunID, "error", err)
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

func (s *Syncer) failedEvent(ctx context.Context, in intake, run *Run, reason messages.Reason, retryable bool, msg string, edit func(*messages.SyncFailed)) Event {
	f := messages.SyncFailed{
		RequestID:     in.requestID,
		Target:        in.target,
		ExportURL:     in.exportURL,
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
		f.ExportURL = in.req.ExportURL
	}
	if run != nil {
		f.RunID = run.RunID
		f.Attempts = run.Attempts
	}
	if edit != nil {
		edit(&f)
	}
	body, _ := json.Marshal(f)
	return Event{
		Subject:  s.subjects.Failed(in.target),
		Envelope: s.envelope(ctx, messages.FailedID(in.requestID), messages.TypeFailed, in.target),
		Body:     body,
	}
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
