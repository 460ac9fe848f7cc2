package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
)

// Job durations, the history the poll planner learns from (handlers.Durations).
//
// Key, under the target's hash tag like every other key of the target:
//
//	<prefix>{<target>}:dur:<shape>  list  whole milliseconds, newest first;
//	                                      at most DurationSamples; expires
//	                                      DurationRetention after its last write
//
// A write is one script (lua/record_duration.lua): LPUSH, LTRIM, PEXPIRE, with
// KEYS = [the list] and ARGV = [duration ms, DurationSamples, retention ms]. It
// reads nothing, so it can later be folded into the run's finish script (same
// slot) by appending that key and those three arguments, which saves its round
// trip. A read is one LRANGE; DurationCache spares most syncs even that.
const (
	DurationSamples   = 64
	DurationRetention = 90 * 24 * time.Hour
	// durationRetentionMs is DurationRetention as the scripts take it: a
	// constant, which an interface holds without an allocation.
	durationRetentionMs = int64(DurationRetention / time.Millisecond)
	maxShapeLen         = 128
)

var (
	//go:embed lua/record_duration.lua
	recordDurationLua    string
	scriptRecordDuration = newLuaScript(recordDurationLua)
)

var _ handlers.Durations = (*Store)(nil)

const keyDurations = "dur:" // + shape

func (k targetKeys) durations(shape string) string { return k.base + keyDurations + shape }

func checkShape(target, shape string) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	if shape == "" || len(shape) > maxShapeLen {
		return fmt.Errorf("%w: shape %q empty or longer than %d bytes", ErrInvalidArgument, shape, maxShapeLen)
	}
	return nil
}

// RecordDuration adds a finished job's duration to the history of (target,
// shape), keeping the newest DurationSamples. Errors: ErrInvalidArgument (an
// empty target or shape, a duration under a millisecond) or a wrapped Redis
// error.
func (s *Store) RecordDuration(ctx context.Context, target, shape string, d time.Duration) error {
	if err := checkShape(target, shape); err != nil {
		return fmt.Errorf("redisstore: record duration: %w", err)
	}
	ms := d.Milliseconds()
	if ms < 1 {
		return fmt.Errorf("redisstore: record duration: %w: %s under 1ms", ErrInvalidArgument, d)
	}
	cmd := scriptRecordDuration.call(1, 3)
	cmd = appendKeys(cmd, s.keys(target).base, keyDurations+shape)
	err := scriptRecordDuration.run(ctx, s.scripts, append(cmd, ms, DurationSamples, durationRetentionMs)).Err()
	if err != nil {
		return fmt.Errorf("redisstore: record duration: %w", err)
	}
	return nil
}

// Durations returns the kept durations of (target, shape), newest first;
// none (nil) when nothing is recorded. Entries that are not whole
// milliseconds are skipped. Errors: ErrInvalidArgument or a wrapped Redis
// error.
func (s *Store) Durations(ctx context.Context, target, shape string) ([]time.Duration, error) {
	if err := checkShape(target, shape); err != nil {
		return nil, fmt.Errorf("redisstore: durations: %w", err)
	}
	var cmd *redis.StringSliceCmd
	// Pipelined: RedisClient has no LRange of its own, and one command is
	// one round trip either way.
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = p.LRange(ctx, s.keys(target).durations(shape), 0, DurationSamples-1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: durations: %w", err)
	}
	var out []time.Duration
	for _, v := range cmd.Val() {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 1 {
			continue
		}
		out = append(out, time.Duration(ms)*time.Millisecond)
	}
	return out, nil
}

// DefaultDurationCacheTTL is how long DurationCache serves a history before
// reading it again.
const DefaultDurationCacheTTL = time.Minute

// DurationCache keeps the histories of a handlers.Durations in process, so
// that a sync needn't read Redis for them: each (target, shape) is read at
// most once per TTL; this process's own writes go to the source and into the
// cached copy at once, other replicas' show up within the TTL. A planner
// tolerates that staleness: a history moves slowly. Safe for concurrent use;
// it holds one entry per (target, shape) ever asked for.
type DurationCache struct {
	src handlers.Durations
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

type cacheKey struct{ target, shape string }

type cacheEntry struct {
	durations []time.Duration // newest first
	read      time.Time
}

var _ handlers.Durations = (*DurationCache)(nil)

// NewDurationCache caches src for ttl (DefaultDurationCacheTTL when ≤ 0) on
// clk (the system clock when nil).
func NewDurationCache(src handlers.Durations, ttl time.Duration, clk clock.Clock) *DurationCache {
	if ttl <= 0 {
		ttl = DefaultDurationCacheTTL
	}
	return &DurationCache{src: src, ttl: ttl, now: clock.Or(clk).Now, entries: map[cacheKey]cacheEntry{}}
}

// RecordDuration writes through to the source and, when it succeeded, adds d
// to the cached history. Errors: the source's.
func (c *DurationCache) RecordDuration(ctx context.Context, target, shape string, d time.Duration) error {
	if err := c.src.RecordDuration(ctx, target, shape, d); err != nil {
		return err
	}
	c.NoteDuration(target, shape, d)
	return nil
}

// NoteDuration adds d to the cached history without writing it: the store
// has it already (Runs.Finish wrote it with the run's end).
func (c *DurationCache) NoteDuration(target, shape string, d time.Duration) {
	k := cacheKey{target, shape}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		e.durations = append([]time.Duration{d}, e.durations...)
		if len(e.durations) > DurationSamples {
			e.durations = e.durations[:DurationSamples]
		}
		c.entries[k] = e
	}
}

// Durations returns the cached history when it was read less than the TTL
// ago, else reads the source. The slice is the caller's. Errors: the
// source's (nothing is cached then).
func (c *DurationCache) Durations(ctx context.Context, target, shape string) ([]time.Duration, error) {
	k := cacheKey{target, shape}
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && now.Sub(e.read) < c.ttl {
		return append([]time.Duration(nil), e.durations...), nil
	}
	ds, err := c.src.Durations(ctx, target, shape)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.entries[k] = cacheEntry{durations: ds, read: now}
	c.mu.Unlock()
	return append([]time.Duration(nil), ds...), nil
}
