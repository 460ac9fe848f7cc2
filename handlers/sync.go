package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/messages"
)

// This file takes a delivery to a decision: decode and check the request
// (intake), take the target's lock and load or create the run record (lock),
// or answer at once (a refusal, a finished run's stored outcome again). A
// run that holds its lock goes on in driver.go.

// Handle runs one SyncRequested delivery to its outcome. It returns Ack once
// the outcome is published, Term for bad input (after publishing a
// SyncFailed), Nak to be asked again later (a queued request, store or
// publish trouble) and at once when the context ended (shutdown: the run's
// state stays in the store, and the redelivery adopts it), or Leave when the
// lock was lost: another delivery of the request drives the run now.
func (s *Syncer) Handle(ctx context.Context, d Delivery) Disposition {
	h := natsHeader(d.Header)
	ctx = s.prop.Extract(ctx, h)
	env, hasEnv := messages.ReadEnvelope(h)
	in := s.intake(d, h, env, hasEnv)
	ctx, span := s.startConsume(ctx, d, env, hasEnv, in)
	var settle func(Disposition)
	if deliver := d.Settle; deliver != nil {
		// A run parked between its steps settles when it ends: the delivery's
		// span ends then, as when the handler returns. (Not d itself: a
		// parked run keeps no body or headers.)
		settle = func(disp Disposition) {
			endDelivery(span, disp)
			deliver(disp)
		}
	}
	disp := s.handle(ctx, d, in, settle)
	if disp.Action != Parked {
		endDelivery(span, disp)
	}
	return disp
}

// endDelivery ends a delivery's consumer span with its disposition.
func endDelivery(span trace.Span, disp Disposition) {
	span.SetAttributes(AttrDisposition.String(disp.Action.String()))
	span.End()
}

func (s *Syncer) handle(ctx context.Context, d Delivery, in intake, settle func(Disposition)) Disposition {
	log := lazyLogger(s.logger, slog.String("target", in.target), slog.String("request_id", in.requestID),
		slog.Uint64("delivery", d.NumDelivered))
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
		ev, span, err := s.outcomes.build(ctx, intakeEcho(in), failure(in.bad.reason, false, in.bad.message, nil), time.Time{})
		if err == nil {
			err = s.outcomes.publish(ctx, ev, span)
		}
		if err != nil {
			log.ErrorContext(ctx, "publish SyncFailed", "error", err)
			return s.retryLater(ctx)
		}
		s.observe(ctx, RunEvent{Kind: EventRefused, Target: in.knownTarget(), RequestID: in.requestID, Reason: in.bad.reason})
		return Disposition{Action: Term}
	}

	t := in.t
	acq := AcquireRequest{Target: t.Name, RequestID: in.requestID, TTL: s.lockTTL}
	if in.req.Concurrency == "queue" {
		acq.Queue = &QueueTicket{Seq: d.StreamSeq, Deadline: in.requestedAt.Add(in.timeout), Settle: s.mustSettle(ctx, log, d)}
	}
	dr, disp, ok := s.lockInTurn(ctx, log, d, in, acq)
	if !ok {
		return disp
	}
	run, lease := dr.run, dr.lease
	trace.SpanFromContext(ctx).SetAttributes(AttrRunID.String(run.RunID))
	// log's attributes and the run's, formatted together when it first
	// logs (lazyAttrs): what log.With("token", ..., "run_id", ...) logs.
	dr.log = lazyLogger(s.logger, slog.String("target", in.target), slog.String("request_id", in.requestID),
		slog.Uint64("delivery", d.NumDelivered), slog.Int64("token", lease.Token), slog.String("run_id", run.RunID))
	s.observe(ctx, RunEvent{Kind: EventStarted, Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
	dr.settle = settle
	dr.finally = func(ctx context.Context) {
		s.held.drop(t.Name, dr.lease.Token) // the lease the drive ended with
		s.observe(ctx, RunEvent{Kind: EventStopped, Target: t.Name, RequestID: run.RequestID, RunID: run.RunID})
	}
	disp = dr.drive(ctx)
	if disp.Action != Parked {
		dr.finally(ctx)
	}
	return disp
}

// lock takes the target's lock for the request, with what its run starts
// from (one store round trip: Locker.Begin), and adopts or creates its run
// record, under the "lock" span; the request's finished run instead
// re-publishes its outcome. ok is false when the delivery ends here, with
// disp, or when attempt.again says to try again (a queued request that
// waited here for its turn: wake.go). A new run's record is written with the lock.
func (s *Syncer) lock(ctx context.Context, log *slog.Logger, d Delivery, in intake, acq AcquireRequest, attempt *turn) (dr *driver, disp Disposition, ok bool) {
	t := in.t
	lctx, span := s.tracer.Start(ctx, SpanLock, trace.WithAttributes(
		AttrTarget.String(t.Name), attribute.String("pathling_sync.concurrency", in.req.Concurrency)))
	defer span.End()
	if acq.Queue == nil {
		// A forbid request for a target one of this replica's runs holds: the
		// store would only say "held". Its refusal is still recorded (refuse).
		if running, busy := s.held.busy(t.Name, s.now(), s.lockTTL/3); busy && running != in.requestID {
			span.SetAttributes(AttrLockResult.String(lockHeld), attribute.Bool("pathling_sync.held_here", true))
			return nil, s.notAcquired(ctx, log, d, in, &LockHeldError{RequestID: running}, attempt), false
		}
	}
	params, key := s.params(in)
	breq := BeginRequest{AcquireRequest: acq, WatermarkKey: key}
	if s.jobs != nil {
		breq.UndeletedJobs = sweepMaxJobs
	}
	// The lock's round trip writes a new run's record too, in the state the
	// kick-off needs (kickOff: a kick-off may be sent from now on; its time,
	// at the latest, is the watermark base). A since "auto" is resolved by
	// the store against the watermark it reads in that round trip
	// (BeginRequest.NewRun).
	newRun, err := s.newRun(in, params, key, time.Time{}, false)
	if err != nil {
		log.ErrorContext(lctx, "create run", "error", err)
		endSpan(span, err)
		return nil, s.retryLater(ctx), false
	}
	newRun.Driver = s.driver
	newRun.State, newRun.Attempts, newRun.FirstKickOff = RunKicking, 1, newRun.StartedAt
	if acq.Queue == nil || !acq.Queue.Settle {
		// A settling ticket only takes its place: no record to carry.
		breq.NewRun = newRun
	}
	granted := s.now()
	begun, err := s.locker.Begin(lctx, breq)
	if err != nil {
		var held *LockHeldError
		var finished *RunFinishedError
		switch {
		case errors.As(err, &finished):
			// A terminal run: re-publish its outcome, free a lock its driver left.
			span.End()
			return nil, s.republish(ctx, log, finished.Run), false
		case errors.As(err, &held):
			span.SetAttributes(AttrLockResult.String(lockHeld))
		case errors.Is(err, ErrNotYourTurn):
			span.SetAttributes(AttrLockResult.String(lockQueued))
		default:
			span.SetAttributes(AttrLockResult.String(lockError))
			span.RecordError(err)
			if begun.Lease.Token != 0 { // granted, but what came with it was unreadable
				_ = s.locker.Release(ctx, begun.Lease)
			}
		}
		return nil, s.notAcquired(ctx, log, d, in, err, attempt), false
	}
	lease := begun.Lease
	span.SetAttributes(AttrLockResult.String(lockAcquired), AttrLockToken.Int64(lease.Token))
	lease.Expires = granted.Add(s.lockTTL)
	dr = &driver{deps: &s.deps, t: t, lease: lease, log: log, nextRenew: granted.Add(s.lockTTL / 3)}

	run := begun.Run
	switch {
	case run != nil && run.State.Terminal():
		// Recorded before terminal records were marked for Begin to tell.
		_ = s.locker.Release(lctx, lease)
		span.End()
		return nil, s.republish(ctx, log, run), false
	case run != nil:
		log.InfoContext(lctx, "adopting run", "run_id", run.RunID, "state", run.State, "status_url", run.StatusURL)
		span.SetAttributes(AttrAdopted.Bool(true), AttrRunID.String(run.RunID))
		s.observe(ctx, RunEvent{Kind: EventAdopted, Target: t.Name, RequestID: in.requestID, RunID: run.RunID})
		run.Driver = s.driver
		// The record now carries this lease's token: a stale driver's
		// writes are refused from here on.
		if err := s.save(lctx, lease, run); err != nil {
			endSpan(span, err)
			return nil, s.storeFailed(ctx, log, run, err), false
		}
	case begun.Created:
		run = breq.NewRun // since "auto" resolved by Begin
		span.SetAttributes(AttrAdopted.Bool(false), AttrRunID.String(run.RunID))
		dr.undeleted, dr.sweepKnown = begun.Undeleted, s.jobs != nil
		dr.kickSaved = true
	default:
		// A store that did not write the new record (a Locker without it):
		// the kick-off writes it first.
		run, err = s.newRun(in, params, key, begun.Watermark, begun.HasWatermark)
		if err != nil {
			log.ErrorContext(lctx, "create run", "error", err)
			endSpan(span, err)
			_ = s.locker.Release(ctx, lease)
			return nil, s.retryLater(ctx), false
		}
		run.Driver = s.driver
		span.SetAttributes(AttrAdopted.Bool(false), AttrRunID.String(run.RunID))
		dr.undeleted, dr.sweepKnown = begun.Undeleted, s.jobs != nil
	}
	dr.run = run
	s.held.set(t.Name, in.requestID, lease)
	if run.WatermarkKey == key {
		dr.wm = storedWatermark{at: begun.Watermark, ok: begun.HasWatermark, known: true}
	}
	return dr, Disposition{}, true
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

// intake decodes d; env and hasEnv are its headers' envelope (ReadEnvelope).
func (s *Syncer) intake(d Delivery, h natsHeader, env messages.Envelope, hasEnv bool) intake {
	var in intake
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

// params are a request's kick-off parameters before since is resolved, and
// the key of the watermark they read and write.
func (s *Syncer) params(in intake) (ImportParams, string) {
	p := ImportParams{
		ExportURL:             in.exportURL,
		SaveMode:              in.req.SaveMode,
		Types:                 in.req.Types,
		Elements:              in.req.Elements,
		TypeFilters:           in.req.TypeFilters,
		IncludeAssociatedData: in.req.IncludeAssociatedData,
	}
	return p, WatermarkKey(p)
}

// newRun builds the record of a new run, resolving since "auto" against the
// stored watermark (wm, ok; read with the lock), once, so that every later
// attempt re-kicks identically.
func (s *Syncer) newRun(in intake, p ImportParams, key string, wm time.Time, ok bool) (*Run, error) {
	now := s.now()
	switch in.req.Since {
	case "":
	case "auto":
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

// mustSettle reports whether a queued request's delivery must first only
// take its place in the queue (QueueTicket.Settle): its first delivery must,
// unless Precedence says no earlier request for its target is on its way.
func (s *Syncer) mustSettle(ctx context.Context, log *slog.Logger, d Delivery) bool {
	if d.NumDelivered != 1 {
		return false
	}
	if s.precedence == nil {
		return true
	}
	// A quarter of the settle at most: a slow answer costs little more
	// than settling would have.
	pctx, cancel := context.WithTimeout(ctx, min(s.queueRetry, settleDelay)/4)
	defer cancel()
	earlier, err := s.precedence.EarlierUnsettled(pctx, d.Subject, d.StreamSeq)
	if err != nil {
		log.DebugContext(ctx, "earlier requests unknown: settling first", "error", err)
	}
	return earlier || err != nil
}

// settleDelay is how long a newly queued request waits before it asks for
// the lock: long enough for requests fetched in the same batch to queue up.
const settleDelay = 250 * time.Millisecond

func (s *Syncer) notAcquired(ctx context.Context, log *slog.Logger, d Delivery, in intake, err error, attempt *turn) Disposition {
	var held *LockHeldError
	waiting := errors.As(err, &held) || errors.Is(err, ErrNotYourTurn)
	if !waiting {
		log.ErrorContext(ctx, "acquire lock", "error", err)
		return s.retryLater(ctx)
	}
	s.observe(ctx, RunEvent{Kind: EventLockConflict, Target: in.target, RequestID: in.requestID})
	if in.req.Concurrency == "queue" {
		if s.now().Before(in.requestedAt.Add(in.timeout)) {
			if held == nil && d.NumDelivered == 1 && attempt.firstAttempt() {
				// Just took its place in the queue: look again soon.
				return s.settleTurn(ctx, d, in, attempt)
			}
			// Wait here for the lock's release, or be redelivered later.
			return s.waitTurn(ctx, d, in, attempt)
		}
		msg := fmt.Sprintf("gave up waiting in the queue of target %q after %s", in.target, in.timeout)
		return s.refuse(ctx, log, in, failure(messages.ReasonTimeout, true, msg, nil))
	}
	running := ""
	if held != nil {
		running = held.RequestID
	}
	msg := fmt.Sprintf("target %q is busy with request %q (concurrency forbid)", in.target, running)
	res := failure(messages.ReasonConflict, true, msg, nil)
	res.runningRequestID = running
	return s.refuse(ctx, log, in, res)
}

// refuse ends a request that never ran with a SyncFailed. The outcome is
// recorded first, so that a redelivery re-publishes it rather than running
// the request once the target is free.
func (s *Syncer) refuse(ctx context.Context, log *slog.Logger, in intake, res result) Disposition {
	ev, span, err := s.outcomes.build(ctx, intakeEcho(in), res, time.Time{})
	if err != nil {
		log.ErrorContext(ctx, "build refusal", "error", err)
		return s.retryLater(ctx)
	}
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
	markOutcome(ctx, true, res.reason)
	if err := s.outcomes.publish(ctx, ev, span); err != nil {
		log.ErrorContext(ctx, "publish refusal", "error", err)
		return s.retryLater(ctx)
	}
	s.observe(ctx, RunEvent{Kind: EventRefused, Target: in.target, RequestID: in.requestID, Reason: res.reason})
	if in.req.Concurrency == "queue" {
		_ = s.recovery.ReleaseFinished(ctx, in.target, in.requestID) // drops its queue ticket
	}
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
	if err := s.outcomes.publish(ctx, *run.Outcome, nil); err != nil {
		log.ErrorContext(ctx, "re-publish outcome", "error", err)
		return s.retryLater(ctx)
	}
	if err := s.recovery.ReleaseFinished(ctx, run.Target, run.RequestID); err != nil {
		log.WarnContext(ctx, "release finished run's lock", "error", err)
	}
	log.InfoContext(ctx, "re-published outcome of finished run", "run_id", run.RunID, "type", run.Outcome.Envelope.Type)
	return Disposition{Action: Ack}
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
