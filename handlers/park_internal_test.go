package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/clock"
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

// benchStatus is a job's status document, as a resumed poll decodes it.
var benchStatus = []byte(`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueInstant":"2026-01-02T03:04:05Z"},` +
	`{"name":"output","part":[{"name":"type","valueCode":"Patient"},{"name":"url","valueUri":"http://pathling/fhir/$result?id=1"},` +
	`{"name":"extension","part":[{"name":"count","valueInteger":12},{"name":"nested","part":[{"name":"a","part":[{"name":"b","valueString":"c"}]}]}]}]}]}`)

// BenchmarkParkedResume is a parked run's resumed step, from its timer's
// callback (a fresh goroutine, as the runtime's timer calls it) to its
// delivery's settle: here the step stops at once (its context has ended)
// and the settle decodes a job status, standing in for a poll's work.
func BenchmarkParkedResume(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resumed := make(chan struct{})
	log := slog.New(slog.DiscardHandler)
	dr := &driver{
		deps: &deps{clock: clock.System{}, logger: log, parked: newParkedRuns()},
		run:  &Run{State: RunPolling, Deadline: time.Now().Add(time.Hour)},
		log:  log,
	}
	dr.settle = func(d Disposition) {
		if d.Action != Nak {
			b.Errorf("settled %s, want nak (shutting down)", d.Action)
		}
		var v any
		if err := json.Unmarshal(benchStatus, &v); err != nil {
			b.Error(err)
		}
		resumed <- struct{}{}
	}
	b.ReportAllocs()
	for b.Loop() {
		w := &parkedWait{dr: dr, ctx: ctx}
		go w.wake()
		<-resumed
	}
}
