package redisstore_test

import (
	"context"
	"testing"
	"time"

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
