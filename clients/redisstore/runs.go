package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// LoadRun returns the record of requestID's run on target. Errors:
// handlers.ErrRunNotFound when there is none (never written, or expired
// after the retention), ErrInvalidArgument, or a wrapped Redis or decoding
// error.
func (s *Store) LoadRun(ctx context.Context, target, requestID string) (*handlers.Run, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("redisstore: load run: %w", err)
	}
	data, err := s.client.HGet(ctx, s.keys(target).run(requestID), "run").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, handlers.ErrRunNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: load run: %w", err)
	}
	var r handlers.Run
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("redisstore: load run %q: %w", requestID, err)
	}
	return &r, nil
}

// SaveRun writes r under the lease: the lease must still hold the target's
// lock and no later token may have written the record. The stored record
// carries Token = l.Token, and so does r once saved. r must belong to the
// lease (same target and request id).
//
// Every write sets the record's TTL to the retention (terminal or not), so a
// record abandoned mid-run cannot stay forever; a live run writes far more
// often than that. With retention off (WithRetention(0)) records persist.
//
// Errors: handlers.ErrLockLost when the lease is stale (another token holds
// the lock or wrote the record), handlers.ErrLockVanished when the lock is
// gone (or held by another request while the record is gone),
// ErrInvalidArgument, or a wrapped Redis or encoding error.
func (s *Store) SaveRun(ctx context.Context, l handlers.Lease, r *handlers.Run) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("redisstore: save run: %w", err)
	}
	if r == nil {
		return fmt.Errorf("redisstore: save run: %w: nil run", ErrInvalidArgument)
	}
	if r.RequestID != l.RequestID || r.Target != l.Target {
		return fmt.Errorf("redisstore: save run: %w: run of %q on %q under a lease of %q on %q",
			ErrInvalidArgument, r.RequestID, r.Target, l.RequestID, l.Target)
	}
	rec := *r
	rec.Token = l.Token
	data, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("redisstore: save run: %w", err)
	}
	now := s.clock.Now()
	retention, score := int64(0), "+inf"
	if s.retention > 0 {
		retention = max(s.retention.Milliseconds(), 1)
		score = strconv.FormatInt(now.Add(s.retention).UnixMilli(), 10)
	}
	k := s.keys(l.Target)
	n, err := scriptSaveRun.Run(ctx, s.client, []string{k.lock(), k.run(l.RequestID), k.runs()},
		l.RequestID, l.Token, data, retention, score, now.UnixMilli()).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: save run: %w", err)
	}
	if err := fencedReply(n); err != nil {
		return err
	}
	r.Token = l.Token
	return nil
}

// RecordOutcome writes the terminal record of a request that never ran
// (refused with conflict, or out of queue time), unless the request already
// has a record; it reports whether it wrote. No lease is needed: nobody
// drives such a request. Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) RecordOutcome(ctx context.Context, r *handlers.Run) (bool, error) {
	if r == nil || !r.State.Terminal() {
		return false, fmt.Errorf("redisstore: record outcome: %w: not a terminal run", ErrInvalidArgument)
	}
	if err := checkTarget(r.Target); err != nil {
		return false, fmt.Errorf("redisstore: record outcome: %w", err)
	}
	if r.RequestID == "" {
		return false, fmt.Errorf("redisstore: record outcome: %w: empty request id", ErrInvalidArgument)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("redisstore: record outcome: %w", err)
	}
	now := s.clock.Now()
	retention, score := int64(0), "+inf"
	if s.retention > 0 {
		retention = max(s.retention.Milliseconds(), 1)
		score = strconv.FormatInt(now.Add(s.retention).UnixMilli(), 10)
	}
	k := s.keys(r.Target)
	n, err := scriptRecordOutcome.Run(ctx, s.client, []string{k.run(r.RequestID), k.runs()},
		r.RequestID, data, retention, score, now.UnixMilli()).Int64()
	if err != nil {
		return false, fmt.Errorf("redisstore: record outcome: %w", err)
	}
	return n == 1, nil
}

// Watermark returns the stored watermark for key on target; ok is false
// when there is none. Watermarks have millisecond precision.
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) Watermark(ctx context.Context, target, key string) (time.Time, bool, error) {
	if err := checkTarget(target); err != nil {
		return time.Time{}, false, fmt.Errorf("redisstore: watermark: %w", err)
	}
	ms, err := s.client.HGet(ctx, s.keys(target).watermarks(), key).Int64()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redisstore: watermark: %w", err)
	}
	return time.UnixMilli(ms).UTC(), true, nil
}

// CommitWatermark sets the watermark for key on l's target to max(stored, t),
// so it never moves backwards. t is stored with millisecond precision,
// rounded down (an earlier since only widens the overlap).
// Errors: handlers.ErrLockLost when the lease is stale,
// handlers.ErrLockVanished when its lock is gone (as for SaveRun),
// ErrInvalidArgument, or a wrapped Redis error.
func (s *Store) CommitWatermark(ctx context.Context, l handlers.Lease, key string, t time.Time) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("redisstore: commit watermark: %w", err)
	}
	if key == "" {
		return fmt.Errorf("redisstore: commit watermark: %w: empty key", ErrInvalidArgument)
	}
	if t.IsZero() {
		return fmt.Errorf("redisstore: commit watermark: %w: zero time", ErrInvalidArgument)
	}
	ms := t.Truncate(time.Millisecond).UnixMilli()
	k := s.keys(l.Target)
	n, err := scriptCommitWatermark.Run(ctx, s.client, []string{k.lock(), k.watermarks(), k.run(l.RequestID)},
		l.RequestID, l.Token, key, ms).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: commit watermark: %w", err)
	}
	return fencedReply(n)
}
