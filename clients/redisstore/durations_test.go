package redisstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	clk "github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

func newStoreOn(t *testing.T, url string) (*redisstore.Store, *redis.Client) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return redisstore.New(c, redisstore.WithPrefix(testPrefix)), c
}

// The history keeps the newest DurationSamples, newest first, in one list
// per (target, shape) under the target's hash tag, with an expiry.
func TestDurationsBounded(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	if got, err := s.Durations(ctx, "t1", "full:*"); err != nil || got != nil {
		t.Fatalf("empty history: %v %v", got, err)
	}
	for i := 1; i <= redisstore.DurationSamples+10; i++ {
		if err := s.RecordDuration(ctx, "t1", "full:*", time.Duration(i)*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Durations(ctx, "t1", "full:*")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != redisstore.DurationSamples || got[0] != 74*time.Second || got[len(got)-1] != 11*time.Second {
		t.Fatalf("kept %d: first %s last %s", len(got), got[0], got[len(got)-1])
	}
	key := testPrefix + "{t1}:dur:full:*"
	if n := rdb.LLen(ctx, key).Val(); n != redisstore.DurationSamples {
		t.Fatalf("%s holds %d", key, n)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > redisstore.DurationRetention {
		t.Fatalf("%s ttl %s", key, ttl)
	}
	// Other shapes and targets are separate histories.
	if err := s.RecordDuration(ctx, "t1", "incr:Patient", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordDuration(ctx, "t2", "full:*", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Durations(ctx, "t1", "incr:Patient"); !slices.Equal(got, []time.Duration{1500 * time.Millisecond}) {
		t.Fatalf("incr:Patient = %v", got)
	}
	if got, _ := s.Durations(ctx, "t2", "full:*"); !slices.Equal(got, []time.Duration{time.Minute}) {
		t.Fatalf("t2 = %v", got)
	}
	for _, bad := range []struct {
		target, shape string
		d             time.Duration
	}{{"", "full:*", time.Second}, {"a{b", "full:*", time.Second}, {"t1", "", time.Second}, {"t1", "full:*", time.Microsecond}} {
		if err := s.RecordDuration(ctx, bad.target, bad.shape, bad.d); !errors.Is(err, redisstore.ErrInvalidArgument) {
			t.Errorf("RecordDuration(%q, %q, %s) = %v", bad.target, bad.shape, bad.d, err)
		}
	}
	if _, err := s.Durations(ctx, "t1", ""); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Errorf("Durations without shape: %v", err)
	}
}

// A history outlives the process that wrote it (another store, as after a
// restart of the service or on another replica) and a restart of a Redis
// that persists (here: an explicit SAVE, loaded at start).
func TestDurationsSurviveRestarts(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	a, rdb := newStoreOn(t, srv.URL)
	for _, d := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute} {
		if err := a.RecordDuration(ctx, "t1", "full:*", d); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{3 * time.Minute, 2 * time.Minute, time.Minute}
	b, _ := newStoreOn(t, srv.URL)
	if got, err := b.Durations(ctx, "t1", "full:*"); err != nil || !slices.Equal(got, want) {
		t.Fatalf("other store: %v %v", got, err)
	}
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	c, _ := newStoreOn(t, srv.URL)
	if got, err := c.Durations(ctx, "t1", "full:*"); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after a Redis restart: %v %v", got, err)
	}
}

// countingDurations counts the reads that reach the store.
type countingDurations struct {
	src   handlers.Durations
	reads atomic.Int64
}

func (c *countingDurations) RecordDuration(ctx context.Context, target, shape string, d time.Duration) error {
	return c.src.RecordDuration(ctx, target, shape, d)
}

func (c *countingDurations) Durations(ctx context.Context, target, shape string) ([]time.Duration, error) {
	c.reads.Add(1)
	return c.src.Durations(ctx, target, shape)
}

// The cache reads each (target, shape) at most once per TTL, shows its own
// writes at once and other replicas' after the TTL.
func TestDurationCache(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	clock := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	src := &countingDurations{src: s}
	cache := redisstore.NewDurationCache(src, time.Minute, clk.Func(clock.Now))

	if err := s.RecordDuration(ctx, "t1", "full:*", time.Minute); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := cache.Durations(ctx, "t1", "full:*"); err != nil || !slices.Equal(got, []time.Duration{time.Minute}) {
			t.Fatalf("cached: %v %v", got, err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("%d reads within the TTL, want 1", n)
	}
	// Its own write: visible at once, no read.
	if err := cache.RecordDuration(ctx, "t1", "full:*", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := cache.Durations(ctx, "t1", "full:*"); !slices.Equal(got, []time.Duration{2 * time.Minute, time.Minute}) {
		t.Fatalf("after own write: %v", got)
	}
	// Another replica's write: seen once the TTL has passed.
	if err := s.RecordDuration(ctx, "t1", "full:*", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := cache.Durations(ctx, "t1", "full:*"); len(got) != 2 {
		t.Fatalf("before the TTL: %v", got)
	}
	clock.Advance(time.Minute)
	if got, _ := cache.Durations(ctx, "t1", "full:*"); !slices.Equal(got, []time.Duration{3 * time.Minute, 2 * time.Minute, time.Minute}) {
		t.Fatalf("after the TTL: %v", got)
	}
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("%d reads, want 2", n)
	}
	// A failed read is an error and caches nothing.
	if _, err := cache.Durations(ctx, "t1", ""); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Fatalf("bad shape: %v", err)
	}
}

// Concurrent readers and writers of one cache (run with -race).
func TestDurationCacheConcurrent(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	cache := redisstore.NewDurationCache(s, time.Millisecond, nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				if err := cache.RecordDuration(ctx, "t1", "full:*", time.Duration(w*100+i+1)*time.Millisecond); err != nil {
					t.Error(err)
					return
				}
				if _, err := cache.Durations(ctx, "t1", "full:*"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, err := s.Durations(ctx, "t1", "full:*"); err != nil || len(got) != redisstore.DurationSamples {
		t.Fatalf("stored %d, %v", len(got), err)
	}
}
