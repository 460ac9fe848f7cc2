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
// adopt), poll, decide; then record the outcome, DELETE the job, release the
// lock and publish the outcome, in that order. Everything it uses besides
// its target and run comes from deps (ports, clock, outcome publisher),
// shared with the Syncer that took the lock.
type driver struct {
	*deps
	t     *Target
	lease Lease
	run   *Run
	log   *slog.Logger

	nextRenew time.Time
	polls     int             // polls of the current job (cadence index)
	failures  int             // consecutive retryable failures (retry index)
	pause     time.Duration   // wait before the next step instead of the cadence (Retry-After, retry backoff)
	lastErr   string          // last retryable failure, for the timeout message
	deleted   bool            // the current job was deleted already
	skew      time.Duration   // largest positive clock skew (local − Pathling) seen in this drive
	retakes   int             // times the lock vanished and was taken again (retake)
	job       jobPolls        // what the current job's polls saw (polling.go)
	lag       time.Duration   // detection lag of the completed job; 0: unknown
	sample    *DurationSample // the completed job's duration, written with its terminal record

	// What the lock's store round trip read with the lease (Locker.Begin),
	// so that the run's first steps need not read it again.
	wm         storedWatermark // the run's stored watermark, when known under this lease
	undeleted  []string        // jobs marked undeleted, for the first sweep
	sweepKnown bool            // undeleted holds the first sweep's jobs (nil: none)
	kickSaved  bool            // the lock's round trip saved the first kick-off's record
	jobPending bool            // the run's job (StatusURL) is not recorded yet (its write failed)

	stepAt time.Time // when the next kick-off or poll is due; zero: not planned yet (nextStepAt)
	// settle, when set, lets a run wait for its next step parked, with no
	// goroutine (park): it settles the delivery once the drive ends.
	// finally runs once the drive ends, before the delivery is settled.
	settle  func(Disposition)
	finally func(ctx context.Context)

	forget   string                          // a DELETEd job the finish drops from the registry
	end      func(ctx context.Context) error // writes the run's end again (after a retake)
	released bool                            // the finish released the lock

	// pubSpan is the producer span of the outcome built by finish: the
	// outcome's traceparent. It ends once the outcome is
	// published (finishDisposition) or the drive stops without publishing.
	pubSpan trace.Span
}

// storedWatermark is the stored watermark of a run's key as read under the
// driver's current lease: only the lease's own fenced writes change it.
type storedWatermark struct {
	at    time.Time
	ok    bool // one is stored
	known bool // read under the current lease
}

// errTimeout ends a wait that reached the run's deadline.
var errTimeout = errors.New("run deadline reached")

// drive drives the run from its lock to its end: the Disposition of the
// delivery, or Parked when the run waits for its next step parked (park) and
// settles the delivery itself when it ends.
func (dr *driver) drive(ctx context.Context) Disposition {
	dr.nextRenew = dr.now().Add(dr.lockTTL / 3)
	return dr.steps(ctx)
}

func (dr *driver) steps(ctx context.Context) Disposition {
	for {
		if !dr.now().Before(dr.run.Deadline) {
			return dr.timeout(ctx)
		}
		var err error
		switch dr.run.State {
		case RunStarting, RunKicking, RunPolling:
			if dr.settle != nil {
				parked, err := dr.park(ctx)
				if err != nil {
					return dr.stop(ctx, err)
				}
				if parked {
					return Disposition{Action: Parked}
				}
			}
			if dr.run.State == RunPolling {
				err = dr.poll(ctx)
			} else {
				err = dr.kickOff(ctx)
			}
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

// nextStepAt is when the run's next step (kick-off or poll) is due: planned
// once, when first asked, and kept until the step starts (waitStep), so a
// run parked and resumed (for a lease renewal, say) keeps its plan.
func (dr *driver) nextStepAt(ctx context.Context) time.Time {
	if dr.stepAt.IsZero() {
		now := dr.now()
		if dr.run.State == RunPolling {
			dr.stepAt = now.Add(dr.nextPollWait(ctx))
		} else {
			dr.stepAt = now.Add(dr.pause)
			dr.pause = 0
		}
	}
	return dr.stepAt
}

// waitStep waits (renewing the lease) until the next step is due.
func (dr *driver) waitStep(ctx context.Context) error {
	at := dr.nextStepAt(ctx)
	dr.stepAt = time.Time{}
	return dr.wait(ctx, at.Sub(dr.now()))
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
		return dr.storeFailed(ctx, dr.log, dr.run, err)
	case ctx.Err() != nil:
		dr.log.InfoContext(ctx, "stopping run: shutting down; its state stays for the next driver", "state", dr.run.State)
		return Disposition{Action: Nak}
	default:
		return dr.storeFailed(ctx, dr.log, dr.run, err)
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
	r := dr.run
	dr.retakes++
	switch _, err := dr.runs.LoadRun(ctx, r.Target, r.RequestID); {
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
	granted := dr.now()
	var lease Lease
	err := dr.retryStore(ctx, dr.lease, "reacquire lock", func(ctx context.Context) error {
		var err error
		lease, err = dr.recovery.Reacquire(ctx, dr.lease, dr.lockTTL)
		return err
	})
	var held *LockHeldError
	switch {
	case errors.As(err, &held):
		dr.log.ErrorContext(ctx, "another request took the target while the store had lost this run's lock; "+
			"cancelling this run's Pathling job so that two imports never run on one target",
			"holder", held.RequestID, "status_url", r.StatusURL)
		dr.cancelJob(ctx, false)
		return dr.stop(ctx, ErrLockLost)
	case err != nil:
		return dr.stop(ctx, err)
	}
	lease.Expires = granted.Add(dr.lockTTL)
	dr.lease = lease
	dr.held.set(dr.t.Name, r.RequestID, lease)
	// Redis may have lost what was read under the old lease.
	dr.wm, dr.sweepKnown, dr.undeleted, dr.kickSaved = storedWatermark{}, false, nil, false
	dr.log.InfoContext(ctx, "took the vanished lock again", "new_token", lease.Token)
	if r.State.Terminal() && dr.end != nil {
		// The run's end was refused (after the job's DELETE): write it
		// again, whatever the clock says now.
		if err := dr.end(ctx); err != nil {
			return dr.stop(ctx, err)
		}
		return dr.finishDisposition(ctx)
	}
	if err := dr.persist(ctx); err != nil {
		return dr.stop(ctx, err)
	}
	if r.State.Terminal() {
		return dr.finishDisposition(ctx)
	}
	return dr.drive(ctx)
}

func (dr *driver) kickOff(ctx context.Context) error {
	r := dr.run
	if r.FirstKickOff.IsZero() {
		r.FirstKickOff = dr.now()
	}
	if err := dr.waitStep(ctx); err != nil {
		return err
	}
	dr.deleteLeftBehind(ctx)
	if dr.kickSaved {
		dr.kickSaved = false // written with the lock: state kicking, attempt 1
	} else {
		r.State = RunKicking
		r.Attempts++
		if err := dr.save(ctx, dr.lease, r); err != nil {
			return err
		}
	}
	sctx, span := dr.tracer.Start(ctx, SpanKickOff, trace.WithAttributes(
		AttrTarget.String(r.Target), AttrRunID.String(r.RunID), AttrAttempt.Int(r.Attempts)))
	kctx, cancel := context.WithDeadline(sctx, r.Deadline)
	ko, err := dr.t.Pathling.KickOff(kctx, r.Params)
	cancel()
	if err == nil {
		span.SetAttributes(AttrJobURL.String(ko.StatusURL))
	}
	endSpan(span, err)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return dr.failedCall(ctx, "kick-off", err)
	}
	url := ko.StatusURL
	dr.noteSkew(ctx, ko.ServerDate)
	dr.failures = 0
	dr.polls = 0
	dr.startJob(dr.now())
	dr.deleted = false
	r.StatusURL = url
	r.State = RunPolling
	r.Progress = ""
	// The job and the polling record, in one write, at once: an adopter of
	// the "kicking" record would re-kick, and Pathling hands an identical
	// kick-off the same job only until its import changed the database.
	dr.jobPending = true
	if err := dr.persist(ctx); err != nil {
		return err
	}
	dr.log.InfoContext(ctx, "kicked off import", "status_url", url, "attempt", r.Attempts)
	dr.observe(ctx, RunEvent{Kind: EventKickedOff, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID})
	return nil
}

func (dr *driver) poll(ctx context.Context) error {
	r := dr.run
	if err := dr.waitStep(ctx); err != nil {
		return err
	}
	sctx, span := dr.tracer.Start(ctx, SpanPoll, trace.WithAttributes(
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
	now := dr.now()
	dr.noteSkew(ctx, st.ServerDate)
	dr.polls++
	r.Polls++
	shown := r.ExpectedEnd
	if st.State == JobRunning {
		// Also keeps a Retry-After for the next wait (nextPollWait).
		r.ExpectedEnd = dr.sawRunning(ctx, now, st)
	}
	dr.observe(ctx, RunEvent{Kind: EventPolled, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID, Status: st, Polls: r.Polls, ExpectedEnd: r.ExpectedEnd})
	switch st.State {
	case JobRunning:
		dr.failures = 0
		if !dr.jobPending && r.Progress == st.Progress && r.ExpectedEnd.Equal(shown) &&
			now.Sub(r.UpdatedAt) < recordRefresh {
			// Nothing an adopter or the status commands read has changed
			// but the poll counter: no record write (its encoding per poll
			// of every running sync). The lease is renewed at once instead
			// (the next wait's first step): like the write did, that tells
			// at every poll a lock that vanished (Redis lost its data) or was
			// taken over, before another request's import can get far.
			dr.nextRenew = now
			return nil
		}
		r.Progress = st.Progress
		return dr.persist(ctx)
	case JobDone:
		return dr.completed(ctx, st, false, now)
	case JobLost:
		r.Losses++
		dr.log.WarnContext(ctx, "Pathling lost the job (restarted?)", "status_url", r.StatusURL, "losses", r.Losses)
		if r.Losses >= dr.t.MaxJobLosses {
			return dr.fail(ctx, messages.ReasonJobLost, true,
				fmt.Sprintf("Pathling lost the import job %d times (404 on %s)", r.Losses, r.StatusURL), nil)
		}
		r.State = RunStarting
		r.StatusURL = ""
		dr.jobPending = false // gone from Pathling: nothing to record
		return dr.save(ctx, dr.lease, r)
	case JobFailed:
		f := st.Failure
		if f == nil {
			f = &PathlingError{Reason: messages.ReasonImportFailed, Message: "import failed"}
		}
		if f.Empty && r.Params.Since != nil {
			return dr.completed(ctx, st, true, now)
		}
		if f.Retryable {
			// Even with KeepJobs: the identical re-kick would get the cached failure.
			dr.cancelJob(ctx, false)
			return dr.retryAfterFailure(ctx, f)
		}
		dr.deleteJob(ctx)
		return dr.fail(ctx, messages.ReasonImportFailed, false, f.Message, f)
	}
	return fmt.Errorf("unknown job state %d", st.State)
}

// recordRefresh bounds how stale a running job's record may get when its
// polls see nothing new (no X-Progress change, the same expected end): the
// record's poll count, which `status` and `request --wait` show, is written
// at least this often. An adopter needs only the state and the status URL,
// which every change writes at once.
const recordRefresh = 5 * time.Minute

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
		dr.jobPending = false
	}
	return dr.persist(ctx)
}

// wait sleeps d (cut at the deadline) while renewing the lease every third
// of its TTL, on the service's clock. No spinning.
func (dr *driver) wait(ctx context.Context, d time.Duration) error {
	until := dr.now().Add(d)
	timedOut := false
	if !until.Before(dr.run.Deadline) {
		until = dr.run.Deadline
		timedOut = true
	}
	for {
		now := dr.now()
		if err := dr.renewDue(ctx, now); err != nil {
			return err
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
		// The service's clock: a test's clock can drive a run's waits.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-dr.clock.After(next.Sub(now)):
		}
	}
}

// renewDue renews the lease when its renewal is due at now. A failure
// other than a lost or vanished lock (a Redis blip) is retried soon: the
// TTL leaves two more chances.
func (dr *driver) renewDue(ctx context.Context, now time.Time) error {
	if dr.nextRenew.After(now) {
		return nil
	}
	if err := dr.locker.Renew(ctx, dr.lease, dr.lockTTL); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrLockLost) || errors.Is(err, ErrLockVanished) {
			return err
		}
		dr.log.WarnContext(ctx, "lock renewal failed", "error", err)
		dr.nextRenew = now.Add(dr.lockTTL / 10)
		return nil
	}
	dr.nextRenew = now.Add(dr.lockTTL / 3)
	dr.lease.Expires = now.Add(dr.lockTTL) // now was taken before the call
	dr.held.set(dr.t.Name, dr.run.RequestID, dr.lease)
	return nil
}

// deleteJob DELETEs the current job unless the target keeps jobs; the run's
// finish drops it from the registry.
func (dr *driver) deleteJob(ctx context.Context) {
	if dr.t.KeepJobs {
		return
	}
	dr.cancelJob(ctx, true)
}

// Bounds of deleting jobs: cancelJob's tries of one DELETE, and the sweep of
// jobs left behind before a kick-off (it must never hold a run up for long).
const (
	deleteTries   = 4
	deleteBudget  = 30 * time.Second
	sweepBudget   = 10 * time.Second
	sweepMaxJobs  = 10
	registryBound = 5 * time.Second // one registry write after the run's context may have ended
)

// cancelJob DELETEs the current job: Pathling's cancel, and how it frees a
// finished job's memory. It tries a few times within a short bound; a job it
// could not delete is marked undeleted in the registry, so that the next
// kick-off for the target deletes it first (else Pathling could hand that
// kick-off this job, with its older export). A deleted job is dropped from
// the registry at once, or, with forgetInFinish, by the run's finish (one
// write fewer).
func (dr *driver) cancelJob(ctx context.Context, forgetInFinish bool) {
	url := dr.run.StatusURL
	if dr.deleted || url == "" {
		return
	}
	dr.deleted = true
	// Retries never outlast the lease: a DELETE still failing is left to the
	// next kick-off's sweep rather than costing the run its lock.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dr.withinLease(ctx, deleteBudget))
	defer cancel()
	var err error
	for try := 0; try < deleteTries; try++ {
		if try > 0 {
			timer := time.NewTimer(dr.t.DeleteRetry.Next(try - 1))
			select {
			case <-dctx.Done():
			case <-timer.C:
			}
			timer.Stop()
			if dctx.Err() != nil {
				break
			}
		}
		if err = dr.t.Pathling.Delete(dctx, url); err == nil {
			if forgetInFinish && dr.jobs != nil {
				dr.forget = url
				return
			}
			dr.forgetJob(ctx, url)
			return
		}
		var pe *PathlingError
		if errors.As(err, &pe) && !pe.Retryable {
			break
		}
	}
	dr.log.WarnContext(ctx, "delete Pathling job failed; the next kick-off for the target deletes it", "status_url", url, "error", err)
	if dr.jobs == nil {
		return
	}
	mctx, mcancel := context.WithTimeout(context.WithoutCancel(ctx), registryBound)
	defer mcancel()
	if err := dr.jobs.MarkUndeleted(mctx, dr.run.Target, url); err != nil {
		dr.log.ErrorContext(ctx, "record undeleted Pathling job", "status_url", url, "error", err)
	}
}

// withinLease renews the lease when its renewal is due or its expiry
// unknown (best effort: a failure shows at the next fenced write) and cuts d
// to two thirds of what then remains, so that a bounded side task (DELETE
// retries, the sweep) never lets the lock lapse before the writes that
// follow it. A lease renewed less than a third of its TTL ago is left as it
// is: a round trip saved on every fast run, for at least 4/9 of the TTL.
func (dr *driver) withinLease(ctx context.Context, d time.Duration) time.Duration {
	now := dr.now()
	if dr.lease.Expires.IsZero() || !now.Before(dr.nextRenew) {
		if err := dr.locker.Renew(context.WithoutCancel(ctx), dr.lease, dr.lockTTL); err == nil {
			dr.lease.Expires = now.Add(dr.lockTTL)
			dr.nextRenew = now.Add(dr.lockTTL / 3)
			dr.held.set(dr.t.Name, dr.run.RequestID, dr.lease)
		}
	}
	if dr.lease.Expires.IsZero() {
		return d
	}
	left := dr.lease.Expires.Sub(now) * 2 / 3
	return max(min(d, left), 100*time.Millisecond)
}

func (dr *driver) forgetJob(ctx context.Context, url string) {
	if dr.jobs == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registryBound)
	defer cancel()
	if err := dr.jobs.ForgetJob(fctx, dr.run.Target, url); err != nil {
		dr.log.WarnContext(ctx, "forget deleted Pathling job", "status_url", url, "error", err)
	}
}

// deleteLeftBehind DELETEs the jobs earlier runs could not delete (Pathling
// unreachable at a timeout, a failure, a finish), before a kick-off Pathling
// could otherwise answer with one of them. Bounded in time and count; what
// still fails stays for the next kick-off.
func (dr *driver) deleteLeftBehind(ctx context.Context) {
	jobs := dr.jobs
	if jobs == nil {
		return
	}
	urls, known := dr.undeleted, dr.sweepKnown
	dr.undeleted, dr.sweepKnown = nil, false // read with the lock: good for the first sweep only
	if known && len(urls) == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, dr.withinLease(ctx, sweepBudget))
	defer cancel()
	if !known {
		var err error
		if urls, err = jobs.UndeletedJobs(sctx, dr.run.Target, sweepMaxJobs); err != nil {
			dr.log.WarnContext(ctx, "list undeleted Pathling jobs", "error", err)
			return
		}
	}
	for _, url := range urls {
		if err := dr.t.Pathling.Delete(sctx, url); err != nil {
			dr.log.WarnContext(ctx, "delete Pathling job left behind; trying again before the next kick-off", "status_url", url, "error", err)
			if sctx.Err() != nil {
				return
			}
			continue
		}
		dr.log.InfoContext(ctx, "deleted Pathling job left behind by an earlier run", "status_url", url)
		if err := jobs.ForgetJob(sctx, dr.run.Target, url); err != nil {
			dr.log.WarnContext(ctx, "forget deleted Pathling job", "status_url", url, "error", err)
		}
	}
}

// persist saves the run record, fenced; while the job of the last kick-off
// is pending (kickOff) it also registers that job (Jobs.RecordKickOff), with
// the run's watermark base (its first kick-off: no later than this one), in
// the same write. When Pathling handed back a job an earlier run started (an
// identical request), the data come from that job's export: the run's
// watermark base moves back to that run's before the record is saved.
func (dr *driver) persist(ctx context.Context) error {
	r := dr.run
	if !dr.jobPending || r.StatusURL == "" {
		return dr.save(ctx, dr.lease, r)
	}
	if dr.jobs == nil {
		if err := dr.save(ctx, dr.lease, r); err != nil {
			return err
		}
		dr.jobPending = false
		return nil
	}
	var earliest time.Time
	err := dr.retryStore(ctx, dr.lease, "record job", func(ctx context.Context) error {
		r.UpdatedAt = dr.now()
		var err error
		earliest, err = dr.jobs.RecordKickOff(ctx, dr.lease, r)
		return err
	})
	if err != nil {
		// Without the record a reused job would go unnoticed: try again later
		// (the identical kick-off gets the same job back).
		return fmt.Errorf("record Pathling job: %w", err)
	}
	dr.jobPending = false
	if dr.earlierJob(ctx, earliest) {
		return dr.save(ctx, dr.lease, r)
	}
	return nil
}

// earlierJob moves the run's watermark base back to its job's kick-off when
// that was earlier (Pathling handed back a job an earlier run started), and
// reports whether it did.
func (dr *driver) earlierJob(ctx context.Context, kickedOffAt time.Time) bool {
	r := dr.run
	if !kickedOffAt.Before(r.FirstKickOff.Truncate(time.Millisecond)) { // the registry keeps milliseconds
		return false
	}
	dr.log.WarnContext(ctx, "Pathling returned an existing job: its export started before this run's kick-off; the watermark starts from that job's kick-off",
		"status_url", r.StatusURL, "job_kicked_off_at", kickedOffAt, "run_kicked_off_at", r.FirstKickOff)
	r.FirstKickOff = kickedOffAt
	return true
}

// noteSkew measures the clock skew from a response's Date header: local
// clock minus Pathling's, in whole seconds (the header's resolution).
func (dr *driver) noteSkew(ctx context.Context, serverDate time.Time) {
	if serverDate.IsZero() {
		return
	}
	skew := dr.now().Sub(serverDate).Truncate(time.Second)
	dr.skew = max(dr.skew, skew)
	r := dr.run
	dr.observe(ctx, RunEvent{Kind: EventClockSkew, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID, ClockSkew: skew})
}

func (dr *driver) timeout(ctx context.Context) Disposition {
	r := dr.run
	// Cancel best-effort: Pathling stops at the import phase at the latest.
	dr.cancelJob(ctx, true)
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

// complete records a successful run: the watermark decision with the
// terminal record holding the outcome (finish).
func (dr *driver) complete(ctx context.Context, st JobStatus, empty bool) error {
	dr.end = func(ctx context.Context) error { return dr.complete(ctx, st, empty) }
	r := dr.run
	if r.FirstKickOff.IsZero() {
		r.FirstKickOff = r.StartedAt // adopted from a record written before kick-off
	}
	overlap := dr.t.Overlap
	if dr.skew > overlap/2 {
		// This replica's clock is ahead of Pathling's (and likely the
		// source's): its kick-off time reads late, and the overlap would not
		// cover the difference.
		dr.log.WarnContext(ctx, "clock ahead of Pathling's: widening this run's watermark overlap by the skew",
			"clock_skew", dr.skew, "overlap", overlap, "widened_overlap", overlap+dr.skew)
		overlap += dr.skew
	}
	var span trace.Span
	for tries := 1; ; tries++ {
		wm := r.FirstKickOff.Add(-overlap).UTC()
		if r.Params.Until != nil && r.Params.Until.Before(wm) {
			// A bounded export covers nothing after until.
			wm = r.Params.Until.UTC()
		}
		if span == nil {
			_, span = dr.tracer.Start(ctx, SpanWatermark, trace.WithAttributes(
				AttrTarget.String(r.Target), AttrRunID.String(r.RunID)))
		}
		span.SetAttributes(AttrWatermark.String(messages.FormatInstant(wm)))
		// The stored watermark may be later than this run's (never
		// backwards), or not moved by it at all (an explicit since leaving a
		// gap), or absent.
		if !dr.wm.known {
			at, ok, err := dr.marks.Watermark(ctx, r.Target, r.WatermarkKey)
			if err != nil {
				err = fmt.Errorf("read watermark: %w", err)
				endSpan(span, err)
				return err
			}
			dr.wm = storedWatermark{at: at, ok: ok, known: true}
		}
		after, stored, commit := settleWatermark(r.Params.Since, dr.wm.at, dr.wm.ok, wm)
		wu := &WatermarkUpdate{Key: r.WatermarkKey, Stored: dr.wm.at, HasStored: dr.wm.ok}
		if commit {
			wu.Commit = after
		}
		markOutcome(ctx, false, "")
		if err := dr.finish(ctx, RunCompleted, completion(r.StatusURL, st, empty, formatWatermark(after, stored)), wu); err != nil {
			// Declared here: errors.As's targets escape, and most finishes
			// succeed.
			var moved *WatermarkMovedError
			var earlier *EarlierJobError
			switch {
			case errors.As(err, &moved) && tries < 3:
				// Changed by someone other than this lease (an operator's reset?):
				// decide again on what is stored now.
				dr.log.WarnContext(ctx, "the stored watermark changed during the run; deciding again",
					"read", dr.wm.at, "stored", moved.Stored, "present", moved.HasStored)
				dr.wm = storedWatermark{at: moved.Stored, ok: moved.HasStored, known: true}
				continue
			case errors.As(err, &earlier) && tries < 3:
				dr.jobPending = false // recorded now
				dr.earlierJob(ctx, earlier.KickedOffAt)
				continue
			}
			endSpan(span, err)
			return err
		}
		dr.wm = storedWatermark{at: after, ok: stored, known: true}
		if stored {
			span.SetAttributes(attribute.String("pathling_sync.watermark.stored", messages.FormatInstant(after)))
			dr.observe(ctx, RunEvent{Kind: EventWatermark, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID, Watermark: after})
		}
		span.End()
		return nil
	}
}

// fail records a failed run with its SyncFailed outcome.
func (dr *driver) fail(ctx context.Context, reason messages.Reason, retryable bool, msg string, pe *PathlingError) error {
	dr.end = func(ctx context.Context) error { return dr.fail(ctx, reason, retryable, msg, pe) }
	markOutcome(ctx, true, reason)
	return dr.finish(ctx, RunFailed, failure(reason, retryable, msg, pe), nil)
}

// finish builds the run's outcome (outcome.go) under a new producer span,
// dr.pubSpan, the event's traceparent; writes, fenced, the terminal record
// holding it with the watermark decision wu (nil: none) and the job's record
// if pending (Runs.Finish); DELETEs the Pathling job; then lets the target
// go (Runs.Finish again: the lock's release, the deleted job dropped from
// the registry). Publishing comes after, in finishDisposition: a crash in
// between leaves a terminal record whose redelivery re-publishes. The
// DELETE comes after the terminal record (an adopter of a record still
// polling would find the job gone and import again) and before the release
// (the target's next run must not be handed this job back).
func (dr *driver) finish(ctx context.Context, state RunState, res result, wu *WatermarkUpdate) error {
	r := dr.run
	finishedAt := dr.now()
	ev, span, err := dr.outcomes.build(ctx, runEcho(r), res, finishedAt)
	if err != nil {
		return err
	}
	if dr.pubSpan != nil {
		dr.pubSpan.End() // an outcome built before (whose recording failed) is superseded
	}
	dr.pubSpan = span
	r.State = state
	r.FinishedAt = finishedAt
	r.Outcome = &ev
	r.UpdatedAt = finishedAt
	r.Token = dr.lease.Token
	// The outcome must be recorded even while shutting down.
	pctx := context.WithoutCancel(ctx)
	f := &Finish{Run: r, Watermark: wu, RecordJob: dr.jobPending && r.StatusURL != "" && dr.jobs != nil}
	if state == RunCompleted {
		f.Duration = dr.sample
	}
	if err := dr.runs.Finish(pctx, dr.lease, f); err != nil {
		return err
	}
	dr.jobPending = false
	dr.deleteJob(ctx)
	dr.held.drop(dr.t.Name, dr.lease.Token) // before the release: never "busy" once free
	if err := dr.runs.Finish(pctx, dr.lease, &Finish{Release: true, ForgetJob: dr.forget}); err != nil {
		dr.log.WarnContext(ctx, "release lock", "error", err) // finishDisposition tries once more
		return nil
	}
	dr.forget = ""
	dr.released = true
	return nil
}

// finishDisposition releases the lock, publishes the recorded outcome and
// acks.
func (dr *driver) finishDisposition(ctx context.Context) Disposition {
	r := dr.run
	pctx := context.WithoutCancel(ctx)
	span := dr.pubSpan // nil for an outcome recorded by an earlier driver: a republish
	dr.pubSpan = nil
	// Release before publishing (finish released with the terminal record): whoever reacts to
	// the outcome (a script's next request, a chain) must find the target free. The terminal
	// record is the truth: a crash before the publish means a redelivery, which re-publishes
	// the recorded outcome.
	if !dr.released {
		dr.held.drop(dr.t.Name, dr.lease.Token)
		if err := dr.locker.Release(pctx, dr.lease); err != nil {
			dr.log.WarnContext(ctx, "release lock", "error", err)
		}
	}
	if err := dr.outcomes.publish(pctx, *r.Outcome, span); err != nil {
		dr.log.ErrorContext(ctx, "publish outcome", "error", err)
		return dr.retryLater(ctx)
	}
	ev := RunEvent{Kind: EventFinished, Target: r.Target, RequestID: r.RequestID, RunID: r.RunID,
		Completed: r.State == RunCompleted, Duration: r.FinishedAt.Sub(r.StartedAt), Polls: r.Polls, DetectionLag: dr.lag}
	if r.State == RunFailed {
		var f messages.SyncFailed
		if json.Unmarshal(r.Outcome.Body, &f) == nil {
			ev.Reason = f.Reason
		}
	}
	dr.observe(ctx, ev)
	dr.log.InfoContext(ctx, "run finished", "state", r.State, "polls", r.Polls, "attempts", r.Attempts, "duration", ev.Duration)
	return Disposition{Action: Ack}
}
