package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A Redis blip (a restart, a failover, a timeout) must not end a run whose
// lock is still valid: a fenced write that fails for any reason other than a
// decision of the store (lost, vanished, held) is tried again with a short
// backoff while the lease has time left, then given up as before.
const (
	storeRetryInitial = 50 * time.Millisecond
	storeRetryMax     = 500 * time.Millisecond
)

// storeDecided reports whether err is the store's answer rather than a
// failure to get one: retrying cannot change it.
func storeDecided(err error) bool {
	var held *LockHeldError
	var moved *WatermarkMovedError
	return errors.Is(err, ErrLockLost) || errors.Is(err, ErrLockVanished) ||
		errors.Is(err, ErrNotYourTurn) || errors.As(err, &held) || errors.As(err, &moved)
}

// retryStore runs op until it succeeds, the store decides, ctx ends, or the
// next attempt would come too close to the lease's expiry (within a tenth of
// the lock TTL, which leaves room for the attempt itself and for clock
// differences with the store). A lease with no known expiry gets no retries.
func (d *deps) retryStore(ctx context.Context, l Lease, what string, op func(context.Context) error) error {
	wait := storeRetryInitial
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || storeDecided(err) || ctx.Err() != nil {
			return err
		}
		if l.Expires.IsZero() || !d.now().Add(wait).Before(l.Expires.Add(-d.lockTTL/10)) {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("%s: gave up after %d attempts, the lock's validity running out: %w", what, attempt, err)
		}
		if attempt == 1 { // once per write: a Redis outage must not flood the logs
			d.logger.WarnContext(ctx, "store write failed; retrying while the lock is valid",
				"target", l.Target, "request_id", l.RequestID, "op", what, "valid_until", l.Expires, "error", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, storeRetryMax)
	}
}

// retryingRuns retries the fenced writes of run records within their
// lease's validity. Reads and unfenced writes pass through: their callers
// ask for redelivery on failure.
type retryingRuns struct {
	Runs
	d *deps
}

func (r retryingRuns) SaveRun(ctx context.Context, l Lease, run *Run) error {
	return r.d.retryStore(ctx, l, "save run", func(ctx context.Context) error {
		return r.Runs.SaveRun(ctx, l, run)
	})
}

// Finish is retried like SaveRun. A retry after a terminal write that did
// happen but lost its reply meets the watermark it committed
// (*WatermarkMovedError): the driver decides again and writes the same.
// The release is idempotent.
func (r retryingRuns) Finish(ctx context.Context, l Lease, f *Finish) error {
	return r.d.retryStore(ctx, l, "finish run", func(ctx context.Context) error {
		return r.Runs.Finish(ctx, l, f)
	})
}
