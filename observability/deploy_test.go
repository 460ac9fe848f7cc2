package observability

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// exposedNames returns every series name /metrics can show: the families of
// a scrape after one event of each kind, histograms with their _bucket,
// _sum and _count series.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"main"}})
	ctx := context.Background()
	for _, ev := range []handlers.RunEvent{
		{Kind: handlers.EventStarted}, {Kind: handlers.EventWatermark, Watermark: time.Now()},
		{Kind: handlers.EventFinished, Completed: true, Duration: time.Second, Polls: 1},
	} {
		ev.Target = "main"
		m.RunEvent(ctx, ev)
	}
	m.PathlingRequest(ctx, "main", KindPoll, 202, time.Millisecond)
	fams, _ := scrape(t, tel.MetricsHandler())
	names := map[string]bool{}
	for name, f := range fams {
		names[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}

// The alert rules, their tests and the Grafana dashboard name only metrics
// the service exposes (promtool checks their syntax, not the names).
func TestDeployFilesNameExposedMetrics(t *testing.T) {
	names := exposedNames(t)
	metricRef := regexp.MustCompile(`\bpathling_sync_[a-z_]+\b`)
	for _, file := range []string{
		"../deploy/prometheus/alerts.yaml",
		"../deploy/prometheus/alerts_test.yaml",
		"../deploy/grafana/pathling-sync.json",
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		refs := metricRef.FindAllString(string(data), -1)
		if len(refs) == 0 {
			t.Errorf("%s names no metric", file)
		}
		for _, ref := range refs {
			if !names[ref] {
				t.Errorf("%s names %s, which /metrics does not have", file, ref)
			}
		}
	}
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("../deploy/grafana/pathling-sync.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without uid or panels")
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, `target=~"$target"`) {
				t.Errorf("panel %q ignores the target variable: %s", p.Title, q.Expr)
			}
		}
	}
}
