package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// Redis losing its data (FLUSHALL here; a restart without persistence in the
// handlers' tests) must not make a fencing token repeat: the fence counter
// restarts from Redis' clock, above every token granted before.
func TestTokensGrowAcrossDataLoss(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	var last handlers.Lease
	for range 3 {
		last = acquire(t, s, "tgt", "req-1", time.Minute)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	after := acquire(t, s, "tgt", "req-2", time.Minute)
	if after.Token <= last.Token {
		t.Fatalf("token %d after the data loss, %d before: a token can repeat", after.Token, last.Token)
	}
	// The takeover path and a second target seed the same way.
	again := acquire(t, s, "tgt", "req-2", time.Minute)
	if again.Token != after.Token+1 {
		t.Fatalf("takeover token %d after %d", again.Token, after.Token)
	}
}

// A live lease whose lock and record vanish (data loss) gets
// ErrLockVanished, not ErrLockLost, from every fenced operation: also once
// another request took the free lock, because its own record is gone too.
// Reacquire then answers with the new holder, and once the target is free
// grants a token above every earlier one.
func TestVanishedLockAfterDataLoss(t *testing.T) {
	ctx := context.Background()
	s, c := newStore(t)
	l := acquire(t, s, "tgt", "req-1", time.Minute)
	if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	checkAll := func(when string, want error) {
		t.Helper()
		if err := s.Renew(ctx, l, time.Minute); !errors.Is(err, want) {
			t.Errorf("%s: renew: %v, want %v", when, err, want)
		}
		if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); !errors.Is(err, want) {
			t.Errorf("%s: save run: %v, want %v", when, err, want)
		}
		if err := s.CommitWatermark(ctx, l, "wm", time.Now()); !errors.Is(err, want) {
			t.Errorf("%s: commit watermark: %v, want %v", when, err, want)
		}
	}
	checkAll("after the flush", handlers.ErrLockVanished)
	if _, err := s.LoadRun(ctx, "tgt", "req-1"); !errors.Is(err, handlers.ErrRunNotFound) {
		t.Fatalf("a vanished-lock write recreated the record: %v", err)
	}

	other := acquire(t, s, "tgt", "req-2", time.Minute)
	checkAll("with another request holding the lock", handlers.ErrLockVanished)
	_, err := s.Reacquire(ctx, l, time.Minute)
	wantHeldBy(t, err, "req-2")

	if err := s.Release(ctx, other); err != nil {
		t.Fatal(err)
	}
	again, err := s.Reacquire(ctx, l, time.Minute)
	if err != nil {
		t.Fatalf("reacquire of a free target: %v", err)
	}
	if again.Token <= other.Token || again.RequestID != "req-1" || again.Target != "tgt" {
		t.Fatalf("reacquired %+v after %+v", again, other)
	}
	if err := s.SaveRun(ctx, again, newRun(again, handlers.RunPolling)); err != nil {
		t.Fatalf("save under the reacquired lease: %v", err)
	}
	// The old lease is stale now, as after any takeover.
	if err := s.Renew(ctx, l, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("old lease after reacquire: %v", err)
	}
}

// Reacquire never takes a run another driver of the same request drove: not
// when that driver holds the lock, nor when it wrote the record and left.
// An expired lock over the lease's own record is taken again.
func TestReacquireRefusesRunDrivenByAnother(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)

	// Expired, record still the lease's own: taken again.
	l := acquire(t, s, "tgt", "req-1", 500*time.Millisecond) // long enough for the save below under load
	if err := s.SaveRun(ctx, l, newRun(l, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, held, err := s.Lock(ctx, "tgt")
		return err == nil && !held
	}, "lock to expire")
	if err := s.Renew(ctx, l, time.Minute); !errors.Is(err, handlers.ErrLockVanished) {
		t.Fatalf("renew of an expired lock: %v", err)
	}
	l2, err := s.Reacquire(ctx, l, time.Minute)
	if err != nil {
		t.Fatalf("reacquire of an expired lock: %v", err)
	}

	// A redelivery took the run over: the old lease gets ErrLockLost.
	l3 := acquire(t, s, "tgt", "req-1", time.Minute)
	if _, err := s.Reacquire(ctx, l2, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("reacquire while another driver holds the lock: %v", err)
	}
	// ... and wrote the record, then let the lock go.
	if err := s.SaveRun(ctx, l3, newRun(l3, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, l3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reacquire(ctx, l2, time.Minute); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("reacquire over a record written by another token: %v", err)
	}
	if _, held, _ := s.Lock(ctx, "tgt"); held {
		t.Fatal("a refused reacquire took the lock")
	}
}
