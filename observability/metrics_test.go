package observability

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

func newTestMetrics(t *testing.T, cfg MetricsConfig) (*Telemetry, *Metrics) {
	t.Helper()
	tel, err := Setup(context.Background(), Options{ServiceVersion: "test", Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	m, err := NewMetrics(tel.MeterProvider(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tel, m
}

func TestMetricsNamesAndStartAtZero(t *testing.T) {
	tel, _ := newTestMetrics(t, MetricsConfig{Targets: []string{"a", "b"}})
	fams, text := scrape(t, tel.MetricsHandler())
	for _, target := range []string{"a", "b"} {
		tl := map[string]string{"target": target}
		checks := []struct {
			name   string
			labels map[string]string
		}{
			{"pathling_sync_syncs_total", map[string]string{"target": target, "outcome": "completed"}},
			{"pathling_sync_syncs_total", map[string]string{"target": target, "outcome": "failed", "reason": "timeout"}},
			{"pathling_sync_lock_conflicts_total", tl},
			{"pathling_sync_lock_losses_total", tl},
			{"pathling_sync_redeliveries_total", tl},
			{"pathling_sync_adoptions_total", tl},
			{"pathling_sync_syncs_in_flight", tl},
		}
		for _, c := range checks {
			if v := mustSample(t, fams, c.name, c.labels); v != 0 {
				t.Errorf("%s%v = %v at start, want 0", c.name, c.labels, v)
			}
		}
	}
	for _, bad := range []string{"otel_scope_name", "_milliseconds", "request_id", "run_id"} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics contains %q:\n%s", bad, text)
		}
	}
	for _, r := range []string{"extra_tokens", "invalid_target", "not_requested"} {
		if v := mustSample(t, fams, "pathling_sync_requests_dropped_total", map[string]string{"reason": r}); v != 0 {
			t.Errorf("pathling_sync_requests_dropped_total{reason=%q} = %v at start, want 0", r, v)
		}
	}
	if _, ok := fams["target_info"]; !ok {
		t.Errorf("no target_info (resource) in /metrics")
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Errorf("no Go runtime metrics in /metrics")
	}
}

func TestMetricsFromRunEvents(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	stored := map[string]time.Time{"k1": now.Add(-3 * time.Hour), "k2": now.Add(-90 * time.Minute)}
	storeDown := false
	tel, m := newTestMetrics(t, MetricsConfig{
		Targets: []string{"main"},
		Clock:   clock.Func(func() time.Time { return now }),
		Watermarks: func(_ context.Context, target string) (map[string]time.Time, error) {
			mu.Lock()
			defer mu.Unlock()
			if storeDown {
				return nil, errors.New("redis down")
			}
			if target != "main" {
				t.Errorf("watermarks read for target %q", target)
			}
			return stored, nil
		},
	})
	ctx := context.Background()
	ev := func(e handlers.RunEvent) { e.Target = "main"; m.RunEvent(ctx, e) }
	ev(handlers.RunEvent{Kind: handlers.EventRedelivered})
	ev(handlers.RunEvent{Kind: handlers.EventAdopted})
	ev(handlers.RunEvent{Kind: handlers.EventLockConflict})
	ev(handlers.RunEvent{Kind: handlers.EventLockConflict})
	ev(handlers.RunEvent{Kind: handlers.EventLockLost})
	ev(handlers.RunEvent{Kind: handlers.EventStarted})
	ev(handlers.RunEvent{Kind: handlers.EventStarted})
	ev(handlers.RunEvent{Kind: handlers.EventStopped})
	ev(handlers.RunEvent{Kind: handlers.EventFinished, Completed: true, Duration: 90 * time.Second, Polls: 7, DetectionLag: 1500 * time.Millisecond})
	ev(handlers.RunEvent{Kind: handlers.EventPolled, Status: handlers.JobStatus{State: handlers.JobRunning}, ExpectedEnd: time.Unix(1_800_000_000, 0)})
	ev(handlers.RunEvent{Kind: handlers.EventFinished, Reason: messages.ReasonTimeout, Duration: 2 * time.Hour, Polls: 120})
	ev(handlers.RunEvent{Kind: handlers.EventRefused, Reason: messages.ReasonConflict})
	ev(handlers.RunEvent{Kind: handlers.EventClockSkew, ClockSkew: 3 * time.Second})
	ev(handlers.RunEvent{Kind: handlers.EventClockSkew, ClockSkew: 600 * time.Second}) // the last one counts
	// A subject naming an unconfigured target must not become a label value.
	m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventRefused, Target: "x-attacker-chosen", Reason: messages.ReasonUnknownTarget})

	// A subject with tokens after the target: counted by reason, never by subject.
	m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventDropped, Dropped: messages.SubjectExtraTokens})

	fams, text := scrape(t, tel.MetricsHandler())
	main := map[string]string{"target": "main"}
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"pathling_sync_redeliveries_total", main, 1},
		{"pathling_sync_adoptions_total", main, 1},
		{"pathling_sync_lock_conflicts_total", main, 2},
		{"pathling_sync_lock_losses_total", main, 1},
		{"pathling_sync_syncs_in_flight", main, 1},
		{"pathling_sync_syncs_total", map[string]string{"target": "main", "outcome": "completed"}, 1},
		{"pathling_sync_syncs_total", map[string]string{"target": "main", "outcome": "failed", "reason": "timeout"}, 1},
		{"pathling_sync_syncs_total", map[string]string{"target": "main", "outcome": "failed", "reason": "conflict"}, 1},
		{"pathling_sync_syncs_total", map[string]string{"target": "", "outcome": "failed", "reason": "unknown_target"}, 1},
		{"pathling_sync_sync_duration_seconds", map[string]string{"target": "main", "outcome": "completed"}, 1},
		{"pathling_sync_sync_duration_seconds", map[string]string{"target": "main", "outcome": "failed"}, 1},
		{"pathling_sync_sync_polls", map[string]string{"target": "main", "outcome": "completed"}, 1},
		{"pathling_sync_last_success_timestamp_seconds", main, float64(now.Unix())},
		// The newest stored watermark is 90 minutes old.
		{"pathling_sync_watermark_age_seconds", main, 5400},
		{"pathling_sync_requests_dropped_total", map[string]string{"reason": "extra_tokens"}, 1},
		{"pathling_sync_clock_skew_seconds", main, 600},
		{"pathling_sync_detection_lag_seconds", main, 1},
		{"pathling_sync_job_expected_end_timestamp_seconds", main, 1_800_000_000},
	}
	for _, w := range want {
		if got := mustSample(t, fams, w.name, w.labels); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	if strings.Contains(text, "x-attacker-chosen") {
		t.Errorf("an unconfigured target became a label value:\n%s", text)
	}
	// The 2 h failure fell in the 7200 s bucket, not below.
	for _, m := range fams["pathling_sync_sync_duration_seconds"].GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetUpperBound() == 3600 && b.GetCumulativeCount() > 1 {
				t.Errorf("a 2 h sync counted below 3600 s")
			}
		}
	}

	// With the store unreachable, the age comes from what this process committed.
	mu.Lock()
	storeDown = true
	mu.Unlock()
	ev(handlers.RunEvent{Kind: handlers.EventWatermark, Watermark: now.Add(-10 * time.Minute)})
	fams, _ = scrape(t, tel.MetricsHandler())
	if got := mustSample(t, fams, "pathling_sync_watermark_age_seconds", main); got != 600 {
		t.Errorf("watermark age with the store down = %v, want 600", got)
	}
	// A seeded last success older than the known one does not move it back.
	m.SeedLastSuccess("main", now.Add(-time.Hour))
	fams, _ = scrape(t, tel.MetricsHandler())
	if got := mustSample(t, fams, "pathling_sync_last_success_timestamp_seconds", main); got != float64(now.Unix()) {
		t.Errorf("last success moved back to %v", got)
	}
}

// The Redis persistence gauge is absent until the start-up check sets it.
func TestRedisPersistenceGauge(t *testing.T) {
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"a"}})
	const name = "pathling_sync_redis_persistence_enabled"
	fams, _ := scrape(t, tel.MetricsHandler())
	if _, ok := sample(fams, name, nil); ok {
		t.Fatalf("%s reported before the check", name)
	}
	m.SetRedisPersistence(false)
	fams, _ = scrape(t, tel.MetricsHandler())
	if v := mustSample(t, fams, name, nil); v != 0 {
		t.Fatalf("%s = %v without persistence, want 0", name, v)
	}
	m.SetRedisPersistence(true)
	fams, _ = scrape(t, tel.MetricsHandler())
	if v := mustSample(t, fams, name, nil); v != 1 {
		t.Fatalf("%s = %v with persistence, want 1", name, v)
	}
}

// The Redis round trips counter reports what the client hook counted, at
// scrape time.
func TestRedisRoundTripsCounter(t *testing.T) {
	var n atomic.Int64
	tel, _ := newTestMetrics(t, MetricsConfig{Targets: []string{"a"}, RedisRoundTrips: n.Load})
	const name = "pathling_sync_redis_round_trips_total"
	fams, _ := scrape(t, tel.MetricsHandler())
	if v := mustSample(t, fams, name, nil); v != 0 {
		t.Fatalf("%s = %v, want 0", name, v)
	}
	n.Add(4)
	fams, text := scrape(t, tel.MetricsHandler())
	if v := mustSample(t, fams, name, nil); v != 4 {
		t.Fatalf("%s = %v, want 4:\n%s", name, v, text)
	}
}

// The label sets made at a target's (or request kind's and status') first
// event are made once even when many events come at once: every
// measurement lands in its series.
func TestMetricsConcurrentFirstEvents(t *testing.T) {
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"a", "b"}})
	ctx := context.Background()
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				target := []string{"a", "b", "unknown"}[(w+i)%3]
				m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventStarted, Target: target})
				m.PathlingRequest(ctx, target, KindPoll, 200+i%5, time.Millisecond)
				m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventFinished, Target: target, Completed: true})
			}
		})
	}
	wg.Wait()
	fams, _ := scrape(t, tel.MetricsHandler())
	var started, requests, completed float64
	for _, target := range []string{"a", "b", ""} {
		started += mustSample(t, fams, "pathling_sync_syncs_in_flight", map[string]string{"target": target})
		completed += mustSample(t, fams, "pathling_sync_syncs_total", map[string]string{"target": target, "outcome": "completed"})
		for code := 200; code < 205; code++ {
			requests += mustSample(t, fams, "pathling_sync_pathling_requests_total",
				map[string]string{"target": target, "kind": KindPoll, "status_code": strconv.Itoa(code)})
		}
	}
	if want := float64(workers * rounds); started != want || requests != want || completed != want {
		t.Errorf("in flight %v, requests %v, completed %v: want %v each", started, requests, completed, want)
	}
}
