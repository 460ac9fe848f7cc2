package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// tripCounter counts a go-redis client's round trips: a command or a pipeline each.
type tripCounter struct{ n atomic.Int64 }

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(1); return next(ctx, cmds) }
}

func refusal(request string) *handlers.Run {
	now := time.Now().UTC()
	return &handlers.Run{RequestID: request, Target: "t1", State: handlers.RunFailed,
		StartedAt: now, UpdatedAt: now, FinishedAt: now}
}

// Refusals recorded at once (a storm's handlers) share pipelines instead of a
// round trip each, and each still learns whether it wrote: a request that has
// a record keeps it. A script cache lost meanwhile (a Redis restart) is loaded again.
func TestRecordOutcomeConcurrentCallsShareRoundTrips(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	if wrote, err := s.RecordOutcome(ctx, refusal("r-0000")); err != nil || !wrote {
		t.Fatalf("first record: %v, %v", wrote, err)
	}
	for round, flush := range []bool{false, true} {
		if flush {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		trips := &tripCounter{}
		c.AddHook(trips)
		const n = 200
		var wg sync.WaitGroup
		wrote := make([]bool, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				wrote[i], errs[i] = s.RecordOutcome(ctx, refusal(fmt.Sprintf("r-%d%03d", round, i)))
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			// r-0000 is the request recorded first: it keeps its record.
			want := !(round == 0 && i == 0)
			if errs[i] != nil || wrote[i] != want {
				t.Fatalf("round %d, call %d: wrote %v, %v; want %v", round, i, wrote[i], errs[i], want)
			}
		}
		if got := trips.n.Load(); got > n/4 {
			t.Errorf("round %d: %d round trips for %d concurrent refusals, want at most %d", round, got, n, n/4)
		} else {
			t.Logf("round %d: %d round trips for %d refusals", round, got, n)
		}
		n2, err := c.ZCard(ctx, testPrefix+"{t1}:runs").Result()
		if err != nil || n2 < int64(n) {
			t.Fatalf("runs index has %d entries, %v", n2, err)
		}
	}
}
