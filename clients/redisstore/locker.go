package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// Acquire takes the target's lock for req.RequestID with a new fencing token
// (strictly greater than every token granted before on the target, also
// across a loss of Redis' data: see the package comment). A lock
// held by the same request is taken over with a new token, which makes the
// old lease stale.
//
// With req.Queue set, the request first gets a ticket in the target's queue
// (kept across calls: a redelivery keeps its place); expired tickets at the
// head of the queue are dropped; the lock is granted only to the head ticket,
// whose ticket is then removed. A request without a ticket (concurrency
// forbid) takes a free lock regardless of the queue.
//
// Errors: *handlers.LockHeldError when another request holds the lock (a
// queued ticket stays), handlers.ErrNotYourTurn when the lock is free but an
// earlier queued request goes first, ErrInvalidArgument, or a wrapped Redis
// error.
func (s *Store) Acquire(ctx context.Context, req handlers.AcquireRequest) (handlers.Lease, error) {
	ttl, err := checkAcquire(req)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	cmd := scriptAcquire.call(4, 7)
	cmd = appendKeys(cmd, s.keys(req.Target).base, keyLock, keyFence, keyQueue, keyQueueDeadlines)
	cmd = s.appendAcquireArgs(cmd, req, ttl)
	v, err := scriptAcquire.run(ctx, s.scripts, cmd).Result()
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	code, val, err := scriptReply(v)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	l, err := acquireReply(req, code, val)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	return l, nil
}

// checkAcquire checks req and returns its TTL in milliseconds.
func checkAcquire(req handlers.AcquireRequest) (int64, error) {
	if err := checkTarget(req.Target); err != nil {
		return 0, err
	}
	if req.RequestID == "" {
		return 0, fmt.Errorf("%w: empty request id", ErrInvalidArgument)
	}
	return ttlMillis(req.TTL)
}

// appendAcquireArgs appends acquire.lua's ARGV for req (KEYS: lock, fence,
// queue, queue deadlines).
func (s *Store) appendAcquireArgs(cmd []any, req handlers.AcquireRequest, ttl int64) []any {
	// Constants in an interface are not allocated; numbers go as numbers
	// (go-redis writes them in decimal, as the strings they replace).
	var queued, seq, deadline, settle any = "0", "0", "0", "0"
	if q := req.Queue; q != nil {
		queued = "1"
		if q.Settle {
			settle = "1"
		}
		seq = q.Seq
		if !q.Deadline.IsZero() {
			deadline = max(q.Deadline.UnixMilli(), 1)
		}
	}
	return append(cmd, req.RequestID, ttl, queued, seq, deadline, s.clock.Now().UnixMilli(), settle)
}

// acquireReply maps acquire.lua's reply codes other than a grant to errors.
// Its errors are not wrapped with the operation.
func acquireReply(req handlers.AcquireRequest, code int64, val any) (handlers.Lease, error) {
	switch code {
	case 1:
		token, ok := val.(int64)
		if !ok {
			return handlers.Lease{}, fmt.Errorf("unexpected token %T", val)
		}
		return handlers.Lease{Target: req.Target, RequestID: req.RequestID, Token: token}, nil
	case 0:
		holder, _ := val.(string)
		return handlers.Lease{}, &handlers.LockHeldError{RequestID: holder}
	case 2:
		return handlers.Lease{}, handlers.ErrNotYourTurn
	}
	return handlers.Lease{}, fmt.Errorf("unexpected script reply code %d", code)
}

// Begin is Acquire and the reads a run starts from, in one script
// (lua/begin.lua around lua/acquire.lua): unless the request's run record is
// terminal (*handlers.RunFinishedError, nothing taken), it takes the lock as
// Acquire does and, when granted, reads the request's record, the watermark
// of req.WatermarkKey and up to req.UndeletedJobs jobs marked undeleted;
// when the request has no record, it writes req.NewRun (if set) under the
// new token, as SaveRun would.
// Records written before the terminal mark existed are not told apart: the
// caller finds them terminal in Begun.Run. Errors: those of Acquire, or a
// wrapped decoding error.
func (s *Store) Begin(ctx context.Context, req handlers.BeginRequest) (handlers.Begun, error) {
	ttl, err := checkAcquire(req.AcquireRequest)
	if err != nil {
		return handlers.Begun{}, fmt.Errorf("redisstore: begin: %w", err)
	}
	rec := newSavedRecord()
	if r := req.NewRun; r != nil {
		if r.RequestID != req.RequestID || r.Target != req.Target {
			return handlers.Begun{}, fmt.Errorf("redisstore: begin: %w: new run of %q on %q for %q on %q",
				ErrInvalidArgument, r.RequestID, r.Target, req.RequestID, req.Target)
		}
		// The token is not known before the grant: the script puts it in
		// place of this one.
		l := handlers.Lease{Target: req.Target, RequestID: req.RequestID, Token: -1}
		if rec, err = s.record(l, r); err != nil {
			return handlers.Begun{}, fmt.Errorf("redisstore: begin: %w", err)
		}
	}
	auto := req.NewRun != nil && req.NewRun.Request.Since == "auto"
	var autoArg any = "0"
	if auto {
		autoArg = "1"
	}
	cmd := scriptBegin.call(8, 14)
	cmd = appendKeys(cmd, s.keys(req.Target).base, keyLock, keyFence, keyQueue, keyQueueDeadlines,
		keyRun+req.RequestID, keyWatermarks, keyUndeletedJobs, keyRuns)
	cmd = s.appendAcquireArgs(cmd, req.AcquireRequest, ttl)
	cmd = append(cmd, req.WatermarkKey, max(req.UndeletedJobs, 0), rec.data, rec.retention, rec.score, rec.now, autoArg)
	v, err := scriptBegin.run(ctx, s.scripts, cmd).Result()
	s.recycle(rec, err)
	if err != nil {
		return handlers.Begun{}, fmt.Errorf("redisstore: begin: %w", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return handlers.Begun{}, fmt.Errorf("redisstore: begin: unexpected script reply %T %v", v, v)
	}
	code, _ := arr[0].(int64)
	if code == 4 {
		r, err := decodeRun(arr[1], nil, req.RequestID)
		if err != nil || r == nil {
			return handlers.Begun{}, fmt.Errorf("redisstore: begin: finished record: %w", err)
		}
		return handlers.Begun{}, &handlers.RunFinishedError{Run: r}
	}
	lease, err := acquireReply(req.AcquireRequest, code, arr[1])
	if err != nil {
		return handlers.Begun{}, fmt.Errorf("redisstore: begin: %w", err)
	}
	if len(arr) != 7 {
		return handlers.Begun{}, fmt.Errorf("redisstore: begin: unexpected script reply %v", v)
	}
	b := handlers.Begun{Lease: lease}
	if b.Run, err = decodeRun(arr[2], arr[6], req.RequestID); err != nil {
		// The lock is taken: the caller releases it (the lease is returned).
		return b, fmt.Errorf("redisstore: begin: %w", err)
	}
	if ms, ok := arr[3].(string); ok {
		t, err := parseMillis(ms)
		if err != nil {
			return b, fmt.Errorf("redisstore: begin: watermark: %w", err)
		}
		b.Watermark, b.HasWatermark = t, true
	}
	if created, _ := arr[5].(int64); created == 1 {
		b.Created = true
		req.NewRun.Token = lease.Token
		if auto && b.HasWatermark {
			since := b.Watermark
			req.NewRun.Params.Since = &since
		}
	}
	if urls, ok := arr[4].([]any); ok {
		for _, u := range urls {
			if s, ok := u.(string); ok {
				b.Undeleted = append(b.Undeleted, s)
			}
		}
	}
	return b, nil
}

// Renew extends the lease by ttl. Errors: handlers.ErrLockLost when another
// token holds the lock (taken over), handlers.ErrLockVanished when the lock is
// gone (expired, released, or Redis lost its data) or another request holds
// it while the lease's run record is gone, ErrInvalidArgument, or a wrapped
// Redis error.
func (s *Store) Renew(ctx context.Context, l handlers.Lease, ttl time.Duration) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("redisstore: renew: %w", err)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("redisstore: renew: %w", err)
	}
	k := s.keys(l.Target)
	cmd := scriptRenew.call(2, 3)
	cmd = appendKeys(cmd, k.base, keyLock, keyRun+l.RequestID)
	n, err := scriptRenew.run(ctx, s.scripts, append(cmd, l.RequestID, l.Token, ms)).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: renew: %w", err)
	}
	return fencedReply(n)
}

// fencedReply maps the reply of a fenced script: 1 done, 0 lost, -1 vanished.
func fencedReply(n int64) error {
	switch n {
	case 1:
		return nil
	case -1:
		return handlers.ErrLockVanished
	}
	return handlers.ErrLockLost
}

// Reacquire takes the lock again, with a new token, for a lease whose lock
// vanished (handlers.ErrLockVanished): granted when the lock is free (or
// still the lease's) and the run record is absent or was last written under
// the lease's token. It drops the request's queue ticket, if any. Errors:
// *handlers.LockHeldError when another request holds the lock,
// handlers.ErrLockLost when another driver of the request holds it or wrote
// the run record, ErrInvalidArgument, or a wrapped Redis error.
func (s *Store) Reacquire(ctx context.Context, l handlers.Lease, ttl time.Duration) (handlers.Lease, error) {
	if err := checkLease(l); err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: %w", err)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: %w", err)
	}
	k := s.keys(l.Target)
	cmd := scriptReacquire.call(5, 3)
	cmd = appendKeys(cmd, k.base, keyLock, keyFence, keyRun+l.RequestID, keyQueue, keyQueueDeadlines)
	v, err := scriptReacquire.run(ctx, s.scripts, append(cmd, l.RequestID, l.Token, ms)).Result()
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: %w", err)
	}
	code, val, err := scriptReply(v)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: %w", err)
	}
	switch code {
	case 1:
		token, ok := val.(int64)
		if !ok {
			return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: unexpected token %T", val)
		}
		return handlers.Lease{Target: l.Target, RequestID: l.RequestID, Token: token}, nil
	case 0:
		holder, _ := val.(string)
		return handlers.Lease{}, &handlers.LockHeldError{RequestID: holder}
	case 3:
		return handlers.Lease{}, handlers.ErrLockLost
	}
	return handlers.Lease{}, fmt.Errorf("redisstore: reacquire: unexpected script reply code %d", code)
}

// Release frees the lock if the lease still holds it (else there is nothing
// to release and it returns nil) and drops the request's queue ticket.
// Either is announced on the release channel (see Releases).
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) Release(ctx context.Context, l handlers.Lease) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("redisstore: release: %w", err)
	}
	k := s.keys(l.Target)
	cmd := scriptRelease.call(3, 4)
	cmd = appendKeys(cmd, k.base, keyLock, keyQueue, keyQueueDeadlines)
	err := scriptRelease.run(ctx, s.scripts, append(cmd, l.RequestID, l.Token, s.releasedChannel(), l.Target)).Err()
	if err != nil {
		return fmt.Errorf("redisstore: release: %w", err)
	}
	return nil
}

// ReleaseFinished frees the lock if requestID holds it, whatever the token,
// and drops its queue ticket, announcing either as Release does. Call it
// only for a request whose run is terminal (its driver died between
// recording the outcome and releasing).
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) ReleaseFinished(ctx context.Context, target, requestID string) error {
	if err := checkTarget(target); err != nil {
		return fmt.Errorf("redisstore: release finished: %w", err)
	}
	if requestID == "" {
		return fmt.Errorf("redisstore: release finished: %w: empty request id", ErrInvalidArgument)
	}
	k := s.keys(target)
	cmd := scriptReleaseFinished.call(3, 3)
	cmd = appendKeys(cmd, k.base, keyLock, keyQueue, keyQueueDeadlines)
	err := scriptReleaseFinished.run(ctx, s.scripts, append(cmd, requestID, s.releasedChannel(), target)).Err()
	if err != nil {
		return fmt.Errorf("redisstore: release finished: %w", err)
	}
	return nil
}
