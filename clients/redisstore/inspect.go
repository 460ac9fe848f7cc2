package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// Read-only views for the status command. None of them writes, so they are
// safe to call from anywhere, at any time.

// LockInfo describes a held target lock.
type LockInfo struct {
	RequestID string
	Token     int64
	TTL       time.Duration // remaining; -1 if the key has no expiry (should not happen)
}

// Lock returns the holder of target's lock; ok is false when it is free.
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) Lock(ctx context.Context, target string) (LockInfo, bool, error) {
	if err := checkTarget(target); err != nil {
		return LockInfo{}, false, fmt.Errorf("redisstore: lock: %w", err)
	}
	key := s.keys(target).lock()
	var fields *redis.SliceCmd
	var pttl *redis.DurationCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fields = p.HMGet(ctx, key, "request", "token")
		pttl = p.PTTL(ctx, key)
		return nil
	})
	if err != nil {
		return LockInfo{}, false, fmt.Errorf("redisstore: lock: %w", err)
	}
	vals := fields.Val()
	req, _ := vals[0].(string)
	tok, _ := vals[1].(string)
	if req == "" {
		return LockInfo{}, false, nil
	}
	token, err := strconv.ParseInt(tok, 10, 64)
	if err != nil {
		return LockInfo{}, false, fmt.Errorf("redisstore: lock: bad token: %w", err)
	}
	ttl := pttl.Val()
	if ttl < 0 {
		ttl = -1
	}
	return LockInfo{RequestID: req, Token: token, TTL: ttl}, true, nil
}

// ListRuns returns the run records of target still within their retention,
// terminal ones included, ordered by start time. Errors: ErrInvalidArgument
// or a wrapped Redis or decoding error.
func (s *Store) ListRuns(ctx context.Context, target string) ([]*handlers.Run, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("redisstore: list runs: %w", err)
	}
	k := s.keys(target)
	ids, err := s.client.ZRange(ctx, k.runs(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: list runs: %w", err)
	}
	runs := make([]*handlers.Run, 0, len(ids))
	const batch = 256
	for start := 0; start < len(ids); start += batch {
		chunk := ids[start:min(start+batch, len(ids))]
		cmds := make([]*redis.SliceCmd, len(chunk))
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range chunk {
				cmds[i] = p.HMGet(ctx, k.run(id), "run", "since")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redisstore: list runs: %w", err)
		}
		for i, c := range cmds {
			v, err := c.Result()
			if err != nil {
				return nil, fmt.Errorf("redisstore: list runs: %w", err)
			}
			r, err := decodeRun(v[0], v[1], chunk[i])
			if err != nil {
				return nil, fmt.Errorf("redisstore: list runs: %w", err)
			}
			if r == nil {
				continue // expired since it was indexed
			}
			runs = append(runs, r)
		}
	}
	slices.SortFunc(runs, func(a, b *handlers.Run) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.RequestID, b.RequestID)
	})
	return runs, nil
}

// Watermarks returns every watermark of target by key. Errors:
// ErrInvalidArgument or a wrapped Redis error.
func (s *Store) Watermarks(ctx context.Context, target string) (map[string]time.Time, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("redisstore: watermarks: %w", err)
	}
	all, err := s.client.HGetAll(ctx, s.keys(target).watermarks()).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: watermarks: %w", err)
	}
	out := make(map[string]time.Time, len(all))
	for key, v := range all {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore: watermarks: %q: %w", key, err)
		}
		out[key] = time.UnixMilli(ms).UTC()
	}
	return out, nil
}

// QueuedRequest is one ticket in a target's queue.
type QueuedRequest struct {
	RequestID string
	Seq       uint64
	Deadline  time.Time // zero when none
}

// Queue returns target's queued requests in serving order. Tickets past
// their deadline are included until an Acquire drops them.
// Errors: ErrInvalidArgument or a wrapped Redis error.
func (s *Store) Queue(ctx context.Context, target string) ([]QueuedRequest, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("redisstore: queue: %w", err)
	}
	k := s.keys(target)
	var members *redis.ZSliceCmd
	var deadlines *redis.MapStringStringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		members = p.ZRangeWithScores(ctx, k.queue(), 0, -1)
		deadlines = p.HGetAll(ctx, k.queueDeadlines())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: queue: %w", err)
	}
	dl := deadlines.Val()
	out := make([]QueuedRequest, 0, len(members.Val()))
	for _, z := range members.Val() {
		id, _ := z.Member.(string)
		q := QueuedRequest{RequestID: id, Seq: uint64(math.Max(z.Score, 0))}
		if ms, err := strconv.ParseInt(dl[id], 10, 64); err == nil && ms != 0 {
			q.Deadline = time.UnixMilli(ms).UTC()
		}
		out = append(out, q)
	}
	return out, nil
}

// Targets lists the targets that have keys in Redis (a watermark outlives
// the stream's history), scanning every master of a cluster. It needs a
// client that can SCAN (redis.UniversalClient can).
// Errors: a wrapped Redis error, or ErrInvalidArgument for a client without SCAN.
func (s *Store) Targets(ctx context.Context) ([]string, error) {
	pattern := globEscape(s.prefix) + "{*}:*"
	var mu sync.Mutex // cluster masters are scanned concurrently
	set := map[string]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			rest, _ := strings.CutPrefix(iter.Val(), s.prefix+"{")
			if t, _, ok := strings.Cut(rest, "}:"); ok && messages.ValidTarget(t) {
				mu.Lock()
				set[t] = true
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	var err error
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	case redis.Cmdable:
		err = scan(ctx, c)
	default:
		return nil, fmt.Errorf("redisstore: targets: %w: client cannot SCAN", ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: targets: %w", err)
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}

// globEscape escapes Redis glob metacharacters.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
