package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/messages"
)

// driver drives one run while holding its target's lease: kick off (or
// adopt), poll, decide, record, publish, release.
type driver struct {
	s     *Syncer
	t     *Target
	lease Lease
	run   *Run
	log   *slog.Logger

	nextRenew time.Time
	polls     int           // polls of the current job (cadence index)
	failures  int           // consecutive retryable failures (retry index)
	pause     time.Duration // wait before the next step instead of the cadence (Retry-After, retry backoff)
	lastErr   string        // last retryable failure, for the timeout message
	deleted   bool          // the current job was deleted already
	retakes   int           // times the lock vanished and was taken again (retake)

	// pubSpan is the producer span of the outcome built by complete or
	// fail: the outcome's traceparent. It ends once the outcome is
	// published (finishDisposition) or the drive stops without publishing.
	pubSpan trace.Span
}

// errTimeout ends a wait that reached the run's deadline.
var errTimeout = errors.New("run deadline reached")

func (dr *driver) drive(ctx context.Context) Disposition {
	s := dr.s
	dr.nextRenew = s.now().Add(s.lockTTL / 3)
	for {
		if !s.now().Before(dr.run.Deadline) {
			return dr.timeout(ctx)
		}
		var err error
		switch dr.run.State {
		case RunStarting, RunKicking:
			err = dr.kickOff(ctx)
		case RunPolling:
			err = dr.poll(ctx)
		default:
			return dr.finishDisposition(ctx)
		}
		if err != nil {
			return dr.stop(ctx, err)
		}
		if dr.run.State.Terminal() {
			return dr.finishDisposition(ctx)
		}
	}
}

// maxRetakes bounds how often one drive takes a vanished lock again: a store
// that keeps losing its data is not one to drive a run on.
const maxRetakes = 3

// stop turns an error that ends the drive early into a disposition.
func (dr *driver) stop(ctx context.Context, err error) Disposition {
	if errors.Is(err, ErrLockVanished) && dr.retakes < maxRetakes && ctx.Err() == nil {
		return dr.retake(ctx)
	}
	if dr.pubSpan != nil {
		endSpan(dr.pubSpan, err)
		dr.pubSpan = nil
	}
	switch {
	case errors.Is(err, errTimeout):
		return dr.timeout(ctx)
	case errors.Is(err, ErrLockLost):
		return dr.s.storeFailed(ctx, dr.log, dr.run, err)
	case ctx.Err() != nil:
		dr.log.InfoContext(ctx, "stopping run: shutting down; its state stays for the next driver", "state", dr.run.State)
		return Disposition{Action: Nak}
	default:
		return dr.s.storeFailed(ctx, dr.log, dr.run, err)
	}
}

// retake answers ErrLockVanished: the run's lock (or, while another request
// holds the target, its record) is gone from the store under this live
// driver: Redis restarted without persistence or was flushed, or the lock
// expired while the driver was paused. It takes the lock again for this run,
// re-saves the record and drives on. When another request holds the target
// by then, it DELETEs this run's Pathling job (best effort) before leaving,
// so that two imports never run on one target; when another driver of the
// request took the run, it leaves it to that one.
func (dr *driver) retake(ctx context.Context) Disposition {
	s := dr.s
	r := dr.run
	dr.retakes++
	switch _, err := s.runs.LoadRun(ctx, r.Target, r.RequestID); {
	case errors.Is(err, ErrRunNotFound):
		dr.log.ErrorContext(ctx, "Redis lost data under a live run: its lock and run record are gone "+
			"(restarted without persistence, flushed, or failed over to an empty replica?); "+
			"taking the lock again and re-saving the record from memory",
			"state", r.State, "status_url", r.StatusURL)
	case err == nil:
		dr.log.WarnContext(ctx, "the run's lock vanished (expired while this driver was paused?); taking it again",
			"state", r.State, "status_url", r.StatusURL)
	default:
		dr.log.WarnContext(ctx, "the run's lock vanished; taking it again", "state", r.State, "status_url", r.StatusURL, "error", err)
	}
	granted := s.now()
	var lease Lease
	err := s.retryStore(ctx, dr.lease, "reacquire lock", func(ctx context.Context) error {
		var err error
		lease, err = s.locker.Reacquire(ctx, dr.lease, s.lockTTL)
		return err
	})
	var held *LockHeldError
	switch {
	case errors.As(err, &held):
		dr.log.ErrorContext(ctx, "another request took the target while the store had lost this run's lock; "+
			"cancelling this run's Pathling job so that two imports never run on one target",
			"holder", held.RequestID, "status_url", r.StatusURL)
		dr.cancelJob(ctx)
		return dr.stop(ctx, ErrLockLost)
	case err != nil:
		return dr.stop(ctx, err)
	}
	lease.Expires = granted.Add(s.lockTTL)
	dr.lease = lease
	dr.log.InfoContext(ctx, "took the vanished lock again", "new_token", lease.Token)
	if err := s.save(ctx, dr.lease, r); err != nil {
		return dr.stop(ctx, err)
	}
	if r.State.Terminal() {
		// The terminal record was refused before the job's DELETE (finish):
		// finish the finish, whatever the clock says now.
		dr.deleteJob(ctx)
		return dr.finishDisposition(ctx)
	}
	return dr.drive(ctx)
}

func (dr *driver) kickOff(ctx context.Context) error {
	s := dr.s
	r := dr.run
	if r.FirstKickOff.IsZero() {
		r.FirstKickOff = s.now()
	}
	if dr.pause > 0 {
		if err := dr.wait(ctx, dr.pause); err != nil {
			return err
		}
		dr.pause = 0
	}
	r.State = RunKicking
	r.Attempts++
	if err := s.save(ctx, dr.lease, r); err != nil {
		return err
	}
	sctx, span := s.tracer.Start(ctx, SpanKickOff, trace.WithAttributes(
		AttrTarget.String(r.Target), AttrRunID.String(r.RunID), AttrAttempt.Int(r.Attempts)))
	kctx, cancel := context.WithDeadline(sctx, r.Deadline)
	url, err := dr.t.Pathling.KickOff(kctx, r.Params)
	cancel()
	if err == nil {
		span.SetAttributes(AttrJobURL.String(url))
	}
	endSpan(span, err)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return dr.failedCall(ctx, "kick-off", err)
	}
	dr.failures = 0
	dr.polls = 0
	dr.deleted = false
	r.StatusURL = url
	r.State = RunPolling
	r.Progress = ""
	dr.log.InfoContext(ctx, "kicked off import", "status_url", url, "attempt", r.Attempts)
	s.observe(ctx, RunEvent{Kind: EventKickedOff, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID})
	return s.save(ctx, dr.lease, r)
}

func (dr *driver) poll(ctx context.Context) error {
	s := dr.s
	r := dr.run
	wait := dr.t.Poll.Next(dr.polls)
	if dr.pause > 0 {
		wait, dr.pause = dr.pause, 0
	}
	if err := dr.wait(ctx, wait); err != nil {
		return err
	}
	sctx, span := s.tracer.Start(ctx, SpanPoll, trace.WithAttributes(
		AttrTarget.String(r.Target), AttrRunID.String(r.RunID), AttrPoll.Int(r.Polls+1), AttrJobURL.String(r.StatusURL)))
	pctx, cancel := context.WithDeadline(sctx, r.Deadline)
	st, err := dr.t.Pathling.Status(pctx, r.StatusURL)
	cancel()
	if err == nil {
		span.SetAttributes(AttrJobState.String(jobStateName(st.State)))
		if st.Progress != "" {
			span.SetAttributes(AttrProgress.String(st.Progress))
		}
	}
	endSpan(span, err)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return dr.failedCall(ctx, "poll", err)
	}
	dr.polls++
	r.Polls++
	s.observe(ctx, RunEvent{Kind: EventPolled, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID, Status: st, Polls: r.Polls})
	switch st.State {
	case JobRunning:
		dr.failures = 0
		r.Progress = st.Progress
		if st.RetryAfter > 0 {
			// Honour the server's pace for the next poll, within the cadence's cap.
			dr.pause = min(st.RetryAfter, dr.t.Poll.Max)
		}
		return s.save(ctx, dr.lease, r)
	case JobDone:
		return dr.complete(ctx, st, false)
	case JobLost:
		r.Losses++
		dr.log.WarnContext(ctx, "Pathling lost the job (restarted?)", "status_url", r.StatusURL, "losses", r.Losses)
		if r.Losses >= dr.t.MaxJobLosses {
			return dr.fail(ctx, messages.ReasonJobLost, true,
				fmt.Sprintf("Pathling lost the import job %d times (404 on %s)", r.Losses, r.StatusURL), nil)
		}
		r.State = RunStarting
		r.StatusURL = ""
		return s.save(ctx, dr.lease, r)
	case JobFailed:
		f := st.Failure
		if f == nil {
			f = &PathlingError{Reason: messages.ReasonImportFailed, Message: "import failed"}
		}
		if f.Empty && r.Params.Since != nil {
			return dr.complete(ctx, st, true)
		}
		if f.Retryable {
			// Even with KeepJobs: the identical re-kick would get the cached failure.
			dr.cancelJob(ctx)
			return dr.retryAfterFailure(ctx, f)
		}
		dr.deleteJob(ctx)
		return dr.fail(ctx, messages.ReasonImportFailed, false, f.Message, f)
	}
	return fmt.Errorf("unknown job state %d", st.State)
}

// failedCall handles an error from a Pathling call: retry within the
// deadline when it is retryable, else end the run.
func (dr *driver) failedCall(ctx context.Context, op string, err error) error {
	var pe *PathlingError
	if !errors.As(err, &pe) {
		pe = &PathlingError{Reason: messages.ReasonUnavailable, Retryable: true, Message: err.Error()}
	}
	dr.log.WarnContext(ctx, "Pathling call failed", "op", op, "reason", pe.Reason, "retryable", pe.Retryable, "status", pe.HTTPStatus, "error", pe.Message)
	if pe.Retryable {
		if op == "kick-off" {
			dr.run.State = RunStarting
		}
		return dr.retryAfterFailure(ctx, pe)
	}
	reason := pe.Reason
	if reason == "" || (op == "kick-off" && reason == messages.ReasonImportFailed) {
		reason = messages.ReasonRejected
	}
	return dr.fail(ctx, reason, false, fmt.Sprintf("%s: %s", op, pe.Message), pe)
}

// retryAfterFailure schedules the next step after a retryable failure: a
// new kick-off (a failed job was already deleted) or another poll, after the
// retry backoff or the server's Retry-After, whichever is longer.
func (dr *driver) retryAfterFailure(ctx context.Context, pe *PathlingError) error {
	wait := dr.t.Retry.Next(dr.failures)
	if pe.RetryAfter > wait {
		wait = pe.RetryAfter
	}
	dr.failures++
	dr.pause = wait
	dr.lastErr = pe.Message
	if dr.run.State == RunPolling && pe.Reason == messages.ReasonImportFailed {
		// The job itself failed: a new one is needed.
		dr.run.State = RunStarting
		dr.run.StatusURL = ""
	}
	return dr.s.save(ctx, dr.lease, dr.run)
}

// wait sleeps d (cut at the deadline) while renewing the lease every third
// of its TTL. One timer; no spinning.
func (dr *driver) wait(ctx context.Context, d time.Duration) error {
	s := dr.s
	until := s.now().Add(d)
	timedOut := false
	if !until.Before(dr.run.Deadline) {
		until = dr.run.Deadline
		timedOut = true
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		now := s.now()
		if !dr.nextRenew.After(now) {
			if err := s.locker.Renew(ctx, dr.lease, s.lockTTL); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, ErrLockLost) || errors.Is(err, ErrLockVanished) {
					return err
				}
				// Redis blip: try again soon; the TTL leaves two more chances.
				dr.log.WarnContext(ctx, "lock renewal failed", "error", err)
				dr.nextRenew = now.Add(s.lockTTL / 10)
			} else {
				dr.nextRenew = now.Add(s.lockTTL / 3)
				dr.lease.Expires = now.Add(s.lockTTL) // now was taken before the call
			}
		}
		if !now.Before(until) {
			if timedOut {
				return errTimeout
			}
			return nil
		}
		next := until
		if dr.nextRenew.Before(next) {
			next = dr.nextRenew
		}
		timer.Reset(next.Sub(now))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
}

func (dr *driver) deleteJob(ctx context.Context) {
	if dr.t.KeepJobs {
		return
	}
	dr.cancelJob(ctx)
}

// cancelJob DELETEs the current job once: Pathling's cancel, and how it
// frees a finished job's memory.
func (dr *driver) cancelJob(ctx context.Context) {
	if dr.deleted || dr.run.StatusURL == "" {
		return
	}
	dr.deleted = true
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := dr.t.Pathling.Delete(dctx, dr.run.StatusURL); err != nil {
		dr.log.WarnContext(ctx, "delete Pathling job", "status_url", dr.run.StatusURL, "error", err)
	}
}

func (dr *driver) timeout(ctx context.Context) Disposition {
	r := dr.run
	// Cancel best-effort: Pathling stops at the import phase at the latest.
	dr.cancelJob(ctx)
	msg := fmt.Sprintf("sync did not finish within %s (%d polls, %d attempts)", r.Deadline.Sub(r.StartedAt), r.Polls, r.Attempts)
	if dr.lastErr != "" {
		msg += "; last error: " + dr.lastErr
	}
	err := dr.fail(context.WithoutCancel(ctx), messages.ReasonTimeout, true, msg, nil)
	if err != nil {
		return dr.stop(context.WithoutCancel(ctx), err)
	}
	return dr.finishDisposition(ctx)
}

// complete records a successful run: watermark first (idempotent, never
// backwards), then the terminal record holding the outcome.
func (dr *driver) complete(ctx context.Context, st JobStatus, empty bool) error {
	s := dr.s
	r := dr.run
	if r.FirstKickOff.IsZero() {
		r.FirstKickOff = r.StartedAt // adopted from a record written before kick-off
	}
	wm := r.FirstKickOff.Add(-dr.t.Overlap).UTC()
	if r.Params.Until != nil && r.Params.Until.Before(wm) {
		// A bounded export covers nothing after until.
		wm = r.Params.Until.UTC()
	}
	wctx, span := s.tracer.Start(ctx, SpanWatermark, trace.WithAttributes(
		AttrTarget.String(r.Target), AttrRunID.String(r.RunID), AttrWatermark.String(messages.FormatInstant(wm))))
	if err := s.runs.CommitWatermark(wctx, dr.lease, r.WatermarkKey, wm); err != nil {
		endSpan(span, err)
		return err
	}
	if stored, ok, err := s.runs.Watermark(wctx, r.Target, r.WatermarkKey); err == nil && ok {
		wm = stored
	}
	// The stored watermark may be later than this run's (never backwards).
	span.SetAttributes(attribute.String("pathling_sync.watermark.stored", messages.FormatInstant(wm)))
	span.End()
	s.observe(ctx, RunEvent{Kind: EventWatermark, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID, Watermark: wm})
	now := s.now()
	c := messages.SyncCompleted{
		RequestID:               r.RequestID,
		RunID:                   r.RunID,
		Target:                  r.Target,
		ExportURL:               messages.RedactURL(r.Params.ExportURL),
		SaveMode:                r.Params.SaveMode,
		Types:                   r.Params.Types,
		Since:                   formatTime(r.Params.Since),
		Until:                   formatTime(r.Params.Until),
		Watermark:               messages.FormatInstant(wm),
		PathlingJob:             r.StatusURL,
		PathlingTransactionTime: st.TransactionTime,
		Outputs:                 st.Outputs,
		Empty:                   empty,
		StartedAt:               r.StartedAt,
		FinishedAt:              now,
		DurationMs:              now.Sub(r.StartedAt).Milliseconds(),
		Polls:                   r.Polls,
		Attempts:                r.Attempts,
		CorrelationID:           r.Request.CorrelationID,
		RequestedBy:             r.Request.RequestedBy,
	}
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode SyncCompleted: %w", err)
	}
	markOutcome(ctx, false, "")
	return dr.finish(ctx, RunCompleted, dr.outcome(ctx, s.subjects.Completed(r.Target), messages.CompletedID(r.RequestID), messages.TypeCompleted, body))
}

// fail records a failed run with its SyncFailed outcome.
func (dr *driver) fail(ctx context.Context, reason messages.Reason, retryable bool, msg string, pe *PathlingError) error {
	s := dr.s
	r := dr.run
	now := s.now()
	f := messages.SyncFailed{
		RequestID:     r.RequestID,
		RunID:         r.RunID,
		Target:        r.Target,
		ExportURL:     messages.RedactURL(r.Params.ExportURL),
		SaveMode:      r.Params.SaveMode,
		Types:         r.Params.Types,
		Since:         formatTime(r.Params.Since),
		Until:         formatTime(r.Params.Until),
		Reason:        reason,
		Retryable:     retryable,
		Message:       msg,
		Attempts:      r.Attempts,
		CorrelationID: r.Request.CorrelationID,
		RequestedBy:   r.Request.RequestedBy,
		StartedAt:     r.StartedAt,
		FinishedAt:    now,
	}
	if pe != nil {
		f.HTTPStatus = pe.HTTPStatus
		if len(pe.OperationOutcome) > 0 && json.Valid(pe.OperationOutcome) {
			f.OperationOutcome = pe.OperationOutcome
		}
	}
	body, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode SyncFailed: %w", err)
	}
	markOutcome(ctx, true, reason)
	return dr.finish(ctx, RunFailed, dr.outcome(ctx, s.subjects.Failed(r.Target), messages.FailedID(r.RequestID), messages.TypeFailed, body))
}

// outcome builds the run's outcome event under a new producer span
// (dr.pubSpan), which becomes the event's traceparent.
func (dr *driver) outcome(ctx context.Context, subject, id, typ string, body []byte) Event {
	if dr.pubSpan != nil {
		dr.pubSpan.End() // an outcome built before (whose recording failed) is superseded
	}
	pctx, span := dr.s.startPublish(ctx, subject, id, typ, dr.run.Target)
	dr.pubSpan = span
	return Event{Subject: subject, Envelope: dr.s.envelope(pctx, id, typ, dr.run.Target), Body: body}
}

// finish writes the terminal record (fenced) holding the outcome, then
// deletes the Pathling job. Publishing comes after, in finishDisposition: a
// crash in between leaves a terminal record whose redelivery re-publishes.
func (dr *driver) finish(ctx context.Context, state RunState, ev Event) error {
	r := dr.run
	r.State = state
	r.FinishedAt = dr.s.now()
	r.Outcome = &ev
	// The outcome must be recorded even while shutting down.
	if err := dr.s.save(context.WithoutCancel(ctx), dr.lease, r); err != nil {
		return err
	}
	dr.deleteJob(ctx)
	return nil
}

// finishDisposition releases the lock, publishes the recorded outcome and
// acks.
func (dr *driver) finishDisposition(ctx context.Context) Disposition {
	s := dr.s
	r := dr.run
	pctx := context.WithoutCancel(ctx)
	span := dr.pubSpan // nil for an outcome recorded by an earlier driver: a republish
	dr.pubSpan = nil
	// Release before publishing: whoever reacts to the outcome (a script's next request, a
	// chain) must find the target free. The terminal record is the truth: a crash between the
	// two means a redelivery, which re-publishes the recorded outcome.
	if err := s.locker.Release(pctx, dr.lease); err != nil {
		dr.log.WarnContext(ctx, "release lock", "error", err)
	}
	if err := s.publish(pctx, *r.Outcome, span); err != nil {
		dr.log.ErrorContext(ctx, "publish outcome", "error", err)
		return s.retryLater(ctx)
	}
	ev := RunEvent{Kind: EventFinished, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID,
		Completed: r.State == RunCompleted, Duration: r.FinishedAt.Sub(r.StartedAt), Polls: r.Polls}
	if r.State == RunFailed {
		var f messages.SyncFailed
		if json.Unmarshal(r.Outcome.Body, &f) == nil {
			ev.Reason = f.Reason
		}
	}
	s.observe(ctx, ev)
	dr.log.InfoContext(ctx, "run finished", "state", r.State, "polls", r.Polls, "attempts", r.Attempts, "duration", ev.Duration)
	return Disposition{Action: Ack}
}

func formatTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return messages.FormatInstant(*t)
}
