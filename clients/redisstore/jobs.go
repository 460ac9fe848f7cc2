package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// Bounds of the job registry per target: Pathling keeps jobs in memory with
// no expiry, but a job older than the retention, or beyond the newest
// maxJobs, is no longer worth remembering.
const (
	maxJobs         = 1000
	maxUndeleted    = 100
	minJobRetention = 24 * time.Hour // with retention off (0), still bounded
)

var _ handlers.Jobs = (*Store)(nil)

// jobRetention is how long the registry keeps a job: the run retention, at
// least a day.
func (s *Store) jobRetention() time.Duration {
	return max(s.retention, minJobRetention)
}

// RecordJob notes that a kick-off sent at kickedOffAt returned statusURL and
// returns the earliest kick-off time recorded for it (millisecond precision,
// rounded down). Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) RecordJob(ctx context.Context, target, statusURL string, kickedOffAt time.Time) (time.Time, error) {
	if err := checkJob(target, statusURL); err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record job: %w", err)
	}
	cutoff := s.clock.Now().Add(-s.jobRetention()).UnixMilli()
	cmd := scriptRecordJob.call(1, 4)
	cmd = appendKeys(cmd, s.keys(target).base, keyJobs)
	ms, err := scriptRecordJob.run(ctx, s.scripts, append(cmd, statusURL, kickedOffAt.UnixMilli(), cutoff, maxJobs)).Int64()
	if err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record job: %w", err)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// RecordKickOff records r's job (r.StatusURL, kicked off at r.FirstKickOff)
// as RecordJob does and, unless the earliest kick-off recorded for it is
// before r.FirstKickOff (millisecond precision), saves r under l as SaveRun
// does, in one script (lua/kicked_off.lua). It returns the earliest
// kick-off. Errors: those of SaveRun (the job is recorded regardless),
// ErrInvalidArgument, or a wrapped Redis error.
func (s *Store) RecordKickOff(ctx context.Context, l handlers.Lease, r *handlers.Run) (time.Time, error) {
	rec, err := s.record(l, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record kick-off: %w", err)
	}
	if err := checkJob(l.Target, r.StatusURL); err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record kick-off: %w", err)
	}
	cutoff := s.clock.Now().Add(-s.jobRetention()).UnixMilli()
	cmd := scriptKickedOff.call(4, 11)
	cmd = appendKeys(cmd, s.keys(l.Target).base, keyJobs, keyLock, keyRun+l.RequestID, keyRuns)
	cmd = append(cmd, r.StatusURL, r.FirstKickOff.UnixMilli(), cutoff, maxJobs,
		l.RequestID, l.Token, rec.data, rec.retention, rec.score, rec.now, rec.done)
	v, err := scriptKickedOff.run(ctx, s.scripts, cmd).Result()
	s.recycle(rec, err)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record kick-off: %w", err)
	}
	code, val, err := scriptReply(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisstore: record kick-off: %w", err)
	}
	ms, ok := val.(int64)
	if !ok {
		return time.Time{}, fmt.Errorf("redisstore: record kick-off: unexpected earliest %T", val)
	}
	earliest := time.UnixMilli(ms).UTC()
	if code == 2 {
		return earliest, nil
	}
	if err := fencedReply(code); err != nil {
		return earliest, err
	}
	r.Token = l.Token
	return earliest, nil
}

// MarkUndeleted notes that the job's DELETE failed. The oldest marks are kept
// first (they were left longest); beyond maxUndeleted or the retention they
// are dropped. Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) MarkUndeleted(ctx context.Context, target, statusURL string) error {
	if err := checkJob(target, statusURL); err != nil {
		return fmt.Errorf("redisstore: mark job undeleted: %w", err)
	}
	k := s.keys(target)
	now := s.clock.Now()
	cutoff := strconv.FormatInt(now.Add(-s.jobRetention()).UnixMilli(), 10)
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddNX(ctx, k.undeletedJobs(), redis.Z{Score: float64(now.UnixMilli()), Member: statusURL})
		p.ZRemRangeByScore(ctx, k.undeletedJobs(), "-inf", "("+cutoff)
		p.ZRemRangeByRank(ctx, k.undeletedJobs(), maxUndeleted, -1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: mark job undeleted: %w", err)
	}
	return nil
}

// UndeletedJobs returns up to n jobs marked undeleted, oldest mark first.
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) UndeletedJobs(ctx context.Context, target string, n int) ([]string, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("redisstore: undeleted jobs: %w", err)
	}
	if n <= 0 {
		return nil, nil
	}
	urls, err := s.client.ZRange(ctx, s.keys(target).undeletedJobs(), 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: undeleted jobs: %w", err)
	}
	return urls, nil
}

// ForgetJob drops a job Pathling no longer has from the registry.
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) ForgetJob(ctx context.Context, target, statusURL string) error {
	if err := checkJob(target, statusURL); err != nil {
		return fmt.Errorf("redisstore: forget job: %w", err)
	}
	k := s.keys(target)
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, k.jobs(), statusURL)
		p.ZRem(ctx, k.undeletedJobs(), statusURL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: forget job: %w", err)
	}
	return nil
}

func checkJob(target, statusURL string) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	if statusURL == "" {
		return fmt.Errorf("%w: empty status URL", ErrInvalidArgument)
	}
	return nil
}
