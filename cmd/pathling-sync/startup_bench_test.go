package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/observability"
)

// writeManyTargets writes a configuration of n targets shaped like the
// bench's inflight scenario (one YAML anchor for the source, shared).
func writeManyTargets(tb testing.TB, n int) string {
	tb.Helper()
	var b strings.Builder
	b.WriteString("targets:\n")
	for i := range n {
		fmt.Fprintf(&b, "  t%05d:\n    pathling: {url: \"http://127.0.0.1:9/t/t%05d/fhir\"}\n", i, i)
		if i == 0 {
			b.WriteString("    allowedExportUrls: &src [\"http://127.0.0.1:9/source/fhir\"]\n")
			b.WriteString("    defaults: &defaults {exportUrl: \"http://127.0.0.1:9/source/fhir\"}\n")
		} else {
			b.WriteString("    allowedExportUrls: *src\n    defaults: *defaults\n")
		}
	}
	path := filepath.Join(tb.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkStartup10k is the part of start-up that grows with the number of
// targets: reading and validating the configuration, the metrics' series
// and the targets' Pathling clients.
func BenchmarkStartup10k(b *testing.B) {
	path := writeManyTargets(b, 10000)
	log := slog.New(slog.DiscardHandler)
	b.ReportAllocs()
	for b.Loop() {
		cfg, err := config.Load(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		tel, err := observability.Setup(context.Background(), observability.Options{Getenv: func(string) string { return "" }})
		if err != nil {
			b.Fatal(err)
		}
		m, err := observability.NewMetrics(tel.MeterProvider(), observability.MetricsConfig{Targets: cfg.TargetNames()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := buildTargets(cfg, log, tel.TracerProvider(), m); err != nil {
			b.Fatal(err)
		}
		_ = tel.Shutdown(context.Background())
	}
}
