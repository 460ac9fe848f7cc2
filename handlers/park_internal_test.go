package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// Parked waits are kept per context's Done channel, one callback for all,
// and dropped when they wake; a context that cannot end keeps none.
func TestParkedRunsBookkeeping(t *testing.T) {
	p := newParkedRuns()
	ctx, cancel := context.WithCancel(context.Background())
	type key struct{}
	a := &parkedWait{ctx: context.WithValue(ctx, key{}, "a"), woken: true} // woken: wake does nothing
	b := &parkedWait{ctx: ctx, woken: true}
	p.add(a.ctx, a)
	p.add(b.ctx, b)
	p.add(context.Background(), &parkedWait{woken: true})
	if n, chans := p.parkedCount(), len(p.byDone); n != 2 || chans != 1 {
		t.Fatalf("%d parked over %d Done channels, want 2 over 1", n, chans)
	}
	p.remove(a.ctx, a)
	if n := p.parkedCount(); n != 1 {
		t.Fatalf("%d parked after a woke, want 1", n)
	}
	cancel()
	testenv.Eventually(t, 10*time.Second, func() bool { return p.parkedCount() == 0 }, "the ended context's waits dropped")
	if len(p.byDone) != 0 {
		t.Fatalf("%d Done channels kept after their context ended", len(p.byDone))
	}
}
