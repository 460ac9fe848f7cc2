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
	v, err := s.client.HMGet(ctx, s.keys(target).run(requestID), "run", "since").Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: load run: %w", err)
	}
	r, err := decodeRun(v[0], v[1], requestID)
	if err != nil {
		return nil, fmt.Errorf("redisstore: load run: %w", err)
	}
	if r == nil {
		return nil, handlers.ErrRunNotFound
	}
	return r, nil
}

// decodeRun decodes a record's fields run and since as Redis returned them:
// nil (no error) when there is no record. since (unix ms), set by Begin for
// a new since "auto" run, is its resolved since until a full write carries
// it in the JSON.
func decodeRun(run, since any, requestID string) (*handlers.Run, error) {
	data, ok := run.(string)
	if !ok {
		return nil, nil
	}
	var r handlers.Run
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return nil, fmt.Errorf("decode run %q: %w", requestID, err)
	}
	if ms, ok := since.(string); ok && r.Params.Since == nil && r.Request.Since == "auto" {
		t, err := parseMillis(ms)
		if err != nil {
			return nil, fmt.Errorf("decode run %q: since: %w", requestID, err)
		}
		r.Params.Since = &t
	}
	return &r, nil
}

// parseMillis parses unix milliseconds as Redis keeps them.
func parseMillis(ms string) (time.Time, error) {
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("unix ms %q: %w", ms, err)
	}
	return time.UnixMilli(n).UTC(), nil
}

// savedRecord is a run record ready for save_run.lua (ARGV[3..7]) or
// finish.lua: r under the lease's token, as JSON, with its retention.
type savedRecord struct {
	data []byte  // in buf when buf is set
	buf  *[]byte // from Store.bufs: back to it once the script ran (Store.recycle)
	// The script's arguments as they go to go-redis, which writes numbers
	// in decimal: an interface made here once, and from constants where it
	// can, is not allocated again when the command is built.
	retention any   // ms (int64), 0 = forever
	score     any   // runs index: expiry unix ms (int64) or "+inf"
	now       int64 // unix ms
	done      any   // "1" when terminal, else "0"
}

// newSavedRecord is a savedRecord without a record (Begin without a new run).
func newSavedRecord() savedRecord {
	return savedRecord{retention: int64(0), score: "+inf", done: "0"}
}

func (s *Store) record(l handlers.Lease, r *handlers.Run) (savedRecord, error) {
	if err := checkLease(l); err != nil {
		return savedRecord{}, err
	}
	if r == nil {
		return savedRecord{}, fmt.Errorf("%w: nil run", ErrInvalidArgument)
	}
	if r.RequestID != l.RequestID || r.Target != l.Target {
		return savedRecord{}, fmt.Errorf("%w: run of %q on %q under a lease of %q on %q",
			ErrInvalidArgument, r.RequestID, r.Target, l.RequestID, l.Target)
	}
	out := newSavedRecord()
	buf, _ := s.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	if data, ok := appendRun((*buf)[:0], r, l.Token); ok {
		*buf = data
		out.data, out.buf = data, buf
	} else {
		s.bufs.Put(buf)
		rec := *r
		rec.Token = l.Token
		data, err := json.Marshal(&rec)
		if err != nil {
			return savedRecord{}, err
		}
		out.data = data
	}
	now := s.clock.Now()
	out.now = now.UnixMilli()
	if s.retention > 0 {
		out.retention = s.retentionMs
		out.score = now.Add(s.retention).UnixMilli()
	}
	if r.State.Terminal() {
		out.done = "1"
	}
	return out, nil
}

// maxPooledRecord bounds the buffers kept for reuse: a record that large is
// rare, and its buffer is not worth holding on to.
const maxPooledRecord = 64 << 10

// recycle hands rec's buffer back for reuse. Call it once the script that
// took rec.data returned with err: go-redis has written the argument by then,
// unless the caller stopped waiting at its context's end (the batch carrying
// it may not have been written yet: scriptBatcher.do), when the buffer is
// left to the garbage collector.
func (s *Store) recycle(rec savedRecord, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	if rec.buf != nil && cap(*rec.buf) <= maxPooledRecord {
		s.bufs.Put(rec.buf)
	}
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
	rec, err := s.record(l, r)
	if err != nil {
		return fmt.Errorf("redisstore: save run: %w", err)
	}
	k := s.keys(l.Target)
	cmd := scriptSaveRun.call(3, 7)
	cmd = appendKeys(cmd, k.base, keyLock, keyRun+l.RequestID, keyRuns)
	cmd = append(cmd, l.RequestID, l.Token, rec.data, rec.retention, rec.score, rec.now, rec.done)
	n, err := scriptSaveRun.run(ctx, s.scripts, cmd).Int64()
	s.recycle(rec, err)
	if err != nil {
		return fmt.Errorf("redisstore: save run: %w", err)
	}
	if err := fencedReply(n); err != nil {
		return err
	}
	r.Token = l.Token
	return nil
}

// Finish writes a run's end (handlers.Runs.Finish) in two calls of one
// script each. With f.Run (lua/finish.lua): the job's record when
// f.RecordJob (as RecordJob, whoever holds the lock), then, fenced like
// SaveRun: a check that the stored watermark is the one f.Watermark's
// decision read and its commit (the later of stored and committed), the
// terminal record (Token = l.Token, retention as SaveRun), and f.Duration
// added to the duration history (as RecordDuration). With f.Release
// (lua/release_run.lua): f.ForgetJob dropped from the registry, the lock
// freed if the lease holds it (then the target's name is published on
// <prefix>released), the request's queue ticket dropped.
//
// Errors: handlers.ErrLockLost, handlers.ErrLockVanished (as SaveRun),
// *handlers.WatermarkMovedError, *handlers.EarlierJobError (nothing written
// but the job's record), ErrInvalidArgument (also for a record that is not
// terminal), or a wrapped Redis or encoding error.
func (s *Store) Finish(ctx context.Context, l handlers.Lease, f *handlers.Finish) error {
	if f != nil && f.Release && f.Run == nil {
		return s.releaseRun(ctx, l, f.ForgetJob)
	}
	if f == nil || f.Run == nil || !f.Run.State.Terminal() {
		return fmt.Errorf("redisstore: finish: %w: not a terminal run", ErrInvalidArgument)
	}
	rec, err := s.record(l, f.Run)
	if err != nil {
		return fmt.Errorf("redisstore: finish: %w", err)
	}
	// Numbers go as numbers: go-redis writes them in decimal, as the
	// strings the script compares them with.
	var wmKey, wmStored, wmCommit any = "", "", ""
	if w := f.Watermark; w != nil {
		if w.Key == "" {
			return fmt.Errorf("redisstore: finish: %w: empty watermark key", ErrInvalidArgument)
		}
		wmKey = w.Key
		if w.HasStored {
			wmStored = w.Stored.UnixMilli()
		}
		if !w.Commit.IsZero() {
			wmCommit = w.Commit.Truncate(time.Millisecond).UnixMilli()
		}
	}
	var jobURL any = ""
	if f.RecordJob {
		if err := checkJob(l.Target, f.Run.StatusURL); err != nil {
			return fmt.Errorf("redisstore: finish: %w", err)
		}
		jobURL = f.Run.StatusURL
	}
	var durationMs int64
	if d := f.Duration; d != nil {
		if err := checkShape(l.Target, d.Shape); err != nil {
			return fmt.Errorf("redisstore: finish: %w", err)
		}
		if durationMs = d.D.Milliseconds(); durationMs < 1 {
			return fmt.Errorf("redisstore: finish: %w: duration %s under 1ms", ErrInvalidArgument, d.D)
		}
	}
	base := s.keys(l.Target).base
	cmd := scriptFinish.call(6, 16)
	if f.Duration != nil {
		cmd = appendKeys(cmd, base, keyLock, keyRun+l.RequestID, keyRuns, keyWatermarks, keyJobs, keyDurations+f.Duration.Shape)
	} else {
		cmd = appendKeys(cmd, base, keyLock, keyRun+l.RequestID, keyRuns, keyWatermarks, keyJobs)
	}
	cmd[2] = len(cmd) - 3
	cutoff := s.clock.Now().Add(-s.jobRetention()).UnixMilli()
	cmd = append(cmd, l.RequestID, l.Token, rec.data, rec.retention, rec.score, rec.now,
		wmKey, wmStored, wmCommit, jobURL, f.Run.FirstKickOff.UnixMilli(), cutoff, maxJobs)
	if f.Duration != nil {
		cmd = append(cmd, durationMs, DurationSamples, durationRetentionMs)
	}
	v, err := scriptFinish.run(ctx, s.scripts, cmd).Result()
	s.recycle(rec, err)
	if err != nil {
		return fmt.Errorf("redisstore: finish: %w", err)
	}
	code, val, err := scriptReply(v)
	if err != nil {
		return fmt.Errorf("redisstore: finish: %w", err)
	}
	switch code {
	case 2:
		moved := &handlers.WatermarkMovedError{}
		if ms, ok := val.(string); ok {
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				return fmt.Errorf("redisstore: finish: stored watermark %q: %w", ms, err)
			}
			moved.Stored, moved.HasStored = time.UnixMilli(n).UTC(), true
		}
		return moved
	case 3:
		ms, ok := val.(int64)
		if !ok {
			return fmt.Errorf("redisstore: finish: unexpected earliest kick-off %T", val)
		}
		return &handlers.EarlierJobError{KickedOffAt: time.UnixMilli(ms).UTC()}
	}
	if err := fencedReply(code); err != nil {
		return err
	}
	f.Run.Token = l.Token
	return nil
}

// releaseRun is Finish's second call (lua/release_run.lua).
func (s *Store) releaseRun(ctx context.Context, l handlers.Lease, forget string) error {
	if err := checkLease(l); err != nil {
		return fmt.Errorf("redisstore: release run: %w", err)
	}
	cmd := scriptReleaseRun.call(5, 5)
	cmd = appendKeys(cmd, s.keys(l.Target).base, keyLock, keyQueue, keyQueueDeadlines, keyJobs, keyUndeletedJobs)
	cmd = append(cmd, l.RequestID, l.Token, forget, s.releasedChannel(), l.Target)
	err := scriptReleaseRun.run(ctx, s.scripts, cmd).Err()
	if err != nil {
		return fmt.Errorf("redisstore: release run: %w", err)
	}
	return nil
}

// RecordOutcome writes the terminal record of a request that never ran
// (refused with conflict, or out of queue time), unless the request already
// has a record; it reports whether it wrote. No lease is needed: nobody
// drives such a request. Concurrent calls share one pipeline (outcomes.go).
// Errors: ErrInvalidArgument or a wrapped Redis error.
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
	n, err := s.outcomes.record(ctx, s.client, &outcomeCall{keys: []string{k.run(r.RequestID), k.runs()},
		args: []any{r.RequestID, data, retention, score, now.UnixMilli()}})
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
	cmd := scriptCommitWatermark.call(3, 4)
	cmd = appendKeys(cmd, k.base, keyLock, keyWatermarks, keyRun+l.RequestID)
	n, err := scriptCommitWatermark.run(ctx, s.scripts, append(cmd, l.RequestID, l.Token, key, ms)).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: commit watermark: %w", err)
	}
	return fencedReply(n)
}
