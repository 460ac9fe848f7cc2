package observability

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// Every configured target keeps series of its own: the SDK's default limit
// of 2,000 series per instrument would fold targets beyond it into one
// "otel_metric_overflow" series, so that a fleet of a few thousand targets
// would lose its per-target metrics silently.
func TestEveryTargetKeepsItsSeries(t *testing.T) {
	const n = 2500
	targets := make([]string, n)
	for i := range targets {
		targets[i] = fmt.Sprintf("t%04d", i)
	}
	tel, err := Setup(context.Background(), Options{ServiceVersion: "test", Getenv: envFrom(nil), Targets: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	m, err := NewMetrics(tel.MeterProvider(), MetricsConfig{Targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tg := range targets {
		m.RunEvent(ctx, handlers.RunEvent{Kind: handlers.EventStarted, Target: tg})
	}
	_, text := scrape(t, tel.MetricsHandler())
	// A fleet this large starts only the completed-syncs series at 0.
	if strings.Contains(text, `reason="timeout",target="t0000"`) {
		t.Errorf("failure series started at 0 for %d targets (over %d)", n, ZeroSeriesTargets)
	}
	if !strings.Contains(text, `pathling_sync_syncs_total{outcome="completed",target="t2499"} 0`) {
		t.Errorf("the last target's completed-syncs series does not start at 0")
	}
	if strings.Contains(text, "otel_metric_overflow") {
		t.Fatalf("series of some targets were folded into otel_metric_overflow")
	}
	last := fmt.Sprintf(`target="%s"`, targets[n-1])
	if !strings.Contains(text, last) {
		t.Fatalf("no series for the last target (%s)", last)
	}
}
