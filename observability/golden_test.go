package observability

import (
	"context"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// serviceExposition is the pathling_sync_* part of /metrics (HELP, TYPE and
// samples, in the exporter's order).
func serviceExposition(t *testing.T, h http.Handler) string {
	t.Helper()
	_, text := scrape(t, h)
	var b strings.Builder
	for line := range strings.Lines(text) {
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if strings.HasPrefix(name, "pathling_sync_") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// metricsScript is a fixed sequence of every kind of Metrics call: runs that
// complete and fail, an unconfigured target, Pathling requests of every kind
// with several status codes and a network error.
func metricsScript(m *Metrics, now time.Time) {
	ctx := context.Background()
	for _, target := range []string{"a", "b", "x-unconfigured"} {
		ev := func(e handlers.RunEvent) { e.Target = target; m.RunEvent(ctx, e) }
		ev(handlers.RunEvent{Kind: handlers.EventRedelivered})
		ev(handlers.RunEvent{Kind: handlers.EventLockConflict})
		ev(handlers.RunEvent{Kind: handlers.EventAdopted})
		ev(handlers.RunEvent{Kind: handlers.EventStarted})
		ev(handlers.RunEvent{Kind: handlers.EventKickedOff})
		m.PathlingRequest(ctx, target, KindToken, http.StatusOK, 3*time.Millisecond)
		m.PathlingRequest(ctx, target, KindKickOff, http.StatusAccepted, 20*time.Millisecond)
		ev(handlers.RunEvent{Kind: handlers.EventClockSkew, ClockSkew: 2 * time.Second})
		m.PathlingRequest(ctx, target, KindPoll, http.StatusAccepted, 4*time.Millisecond)
		ev(handlers.RunEvent{Kind: handlers.EventPolled, Status: handlers.JobStatus{State: handlers.JobRunning}, Polls: 1,
			ExpectedEnd: now.Add(time.Minute)})
		m.PathlingRequest(ctx, target, KindPoll, 0, 30*time.Second)
		m.PathlingRequest(ctx, target, KindPoll, http.StatusOK, 700*time.Millisecond)
		ev(handlers.RunEvent{Kind: handlers.EventPolled, Status: handlers.JobStatus{State: handlers.JobDone}, Polls: 3})
		ev(handlers.RunEvent{Kind: handlers.EventWatermark, Watermark: now.Add(-time.Hour)})
		ev(handlers.RunEvent{Kind: handlers.EventFinished, Completed: true, Duration: 40 * time.Second, Polls: 3,
			DetectionLag: 700 * time.Millisecond})
		m.PathlingRequest(ctx, target, KindDelete, http.StatusNoContent, time.Millisecond)
		ev(handlers.RunEvent{Kind: handlers.EventStopped})
		ev(handlers.RunEvent{Kind: handlers.EventStarted})
		m.PathlingRequest(ctx, target, KindKickOff, http.StatusServiceUnavailable, 2*time.Second)
		ev(handlers.RunEvent{Kind: handlers.EventFinished, Reason: messages.ReasonUnavailable, Duration: 3 * time.Second})
		ev(handlers.RunEvent{Kind: handlers.EventStopped})
		ev(handlers.RunEvent{Kind: handlers.EventRefused, Reason: messages.ReasonConflict})
		ev(handlers.RunEvent{Kind: handlers.EventRefused, Reason: messages.Reason("not-a-reason")})
		ev(handlers.RunEvent{Kind: handlers.EventLockLost})
		m.PathlingRequest(ctx, target, KindDiscovery, http.StatusNotFound, 5*time.Millisecond)
		m.PathlingRequest(ctx, target, KindOther, http.StatusOK, 5*time.Millisecond)
	}
	m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventDropped, Dropped: messages.SubjectInvalidTarget})
	m.SetRedisPersistence(true)
}

// The /metrics exposition of a fixed sequence of calls stays byte for byte
// what it was (names, labels, types, HELP and values), with configured
// targets and without.
func TestMetricsExpositionGolden(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		golden  string
		targets []string
	}{
		{"exposition_targets.txt", []string{"a", "b"}},
		{"exposition_any_target.txt", nil},
	} {
		t.Run(c.golden, func(t *testing.T) {
			tel, m := newTestMetrics(t, MetricsConfig{Targets: c.targets, Clock: clock.Func(func() time.Time { return now }),
				RedisRoundTrips: func() int64 { return 42 }})
			metricsScript(m, now)
			checkGolden(t, c.golden, serviceExposition(t, tel.MetricsHandler()))
		})
	}
}
