package redisstore

import (
	"context"
	"fmt"
	"strconv"
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
	if err := checkTarget(req.Target); err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	if req.RequestID == "" {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w: empty request id", ErrInvalidArgument)
	}
	ttl, err := ttlMillis(req.TTL)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	queued, seq, deadline, settle := "0", "0", "0", "0"
	if q := req.Queue; q != nil {
		queued = "1"
		if q.Settle {
			settle = "1"
		}
		seq = strconv.FormatUint(q.Seq, 10)
		if !q.Deadline.IsZero() {
			deadline = strconv.FormatInt(max(q.Deadline.UnixMilli(), 1), 10)
		}
	}
	k := s.keys(req.Target)
	v, err := scriptAcquire.Run(ctx, s.client,
		[]string{k.lock(), k.fence(), k.queue(), k.queueDeadlines()},
		req.RequestID, ttl, queued, seq, deadline, s.clock.Now().UnixMilli(), settle).Result()
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	code, val, err := scriptReply(v)
	if err != nil {
		return handlers.Lease{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	switch code {
	case 1:
		token, ok := val.(int64)
		if !ok {
			return handlers.Lease{}, fmt.Errorf("redisstore: acquire: unexpected token %T", val)
		}
		return handlers.Lease{Target: req.Target, RequestID: req.RequestID, Token: token}, nil
	case 0:
		holder, _ := val.(string)
		return handlers.Lease{}, &handlers.LockHeldError{RequestID: holder}
	case 2:
		return handlers.Lease{}, handlers.ErrNotYourTurn
	}
	return handlers.Lease{}, fmt.Errorf("redisstore: acquire: unexpected script reply code %d", code)
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
	n, err := scriptRenew.Run(ctx, s.client, []string{k.lock(), k.run(l.RequestID)},
		l.RequestID, l.Token, ms).Int64()
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
	v, err := scriptReacquire.Run(ctx, s.client,
		[]string{k.lock(), k.fence(), k.run(l.RequestID), k.queue(), k.queueDeadlines()},
		l.RequestID, l.Token, ms).Result()
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
	err := scriptRelease.Run(ctx, s.client, []string{k.lock(), k.queue(), k.queueDeadlines()},
		l.RequestID, l.Token, s.releasedChannel(), l.Target).Err()
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
	err := scriptReleaseFinished.Run(ctx, s.client, []string{k.lock(), k.queue(), k.queueDeadlines()},
		requestID, s.releasedChannel(), target).Err()
	if err != nil {
		return fmt.Errorf("redisstore: release finished: %w", err)
	}
	return nil
}
