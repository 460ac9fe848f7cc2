package redisstore_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
)

func BenchmarkAcquireRenewRelease(b *testing.B) {
	ctx := context.Background()
	s, _ := newStore(b)
	req := handlers.AcquireRequest{Target: "tgt", RequestID: "req-1", TTL: time.Minute}
	for b.Loop() {
		l, err := s.Acquire(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Renew(ctx, l, time.Minute); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSaveRun(b *testing.B) {
	ctx := context.Background()
	s, _ := newStore(b)
	l, err := s.Acquire(ctx, handlers.AcquireRequest{Target: "tgt", RequestID: "req-1", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	r := newRun(l, handlers.RunPolling)
	for b.Loop() {
		r.Polls++
		if err := s.SaveRun(ctx, l, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastSyncConcurrent runs fast syncs' store calls from 256
// goroutines at once, each on its own target, as a flood of syncs does.
// Besides ns/op and allocs/op (per sync) it reports the client's round trips
// per sync and Redis' CPU (INFO cpu, user+sys) per sync.
func BenchmarkFastSyncConcurrent(b *testing.B) {
	s, c := newStore(b)
	rt := &redisstore.RoundTrips{}
	c.AddHook(rt)
	if err := fastSyncOn(s, "warm-up", "warm-up", nil); err != nil { // loads the scripts
		b.Fatal(err)
	}
	var next, seq atomic.Int64
	cpu0, rt0 := redisCPU(b, c), rt.Load()
	b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		target := "tgt-" + strconv.FormatInt(next.Add(1), 10)
		for pb.Next() {
			if err := fastSyncOn(s, target, "req-"+strconv.FormatInt(seq.Add(1), 10), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(rt.Load()-rt0)/float64(b.N), "roundtrips/op")
	b.ReportMetric((redisCPU(b, c)-cpu0)*1e6/float64(b.N), "redis-cpu-µs/op")
}

// redisCPU is Redis' CPU time so far in seconds (INFO cpu, used_cpu_sys + used_cpu_user).
func redisCPU(tb testing.TB, c *redis.Client) float64 {
	tb.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatal(err)
			}
			sum += f
		}
	}
	return sum
}
