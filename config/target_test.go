package config_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/config"
)

func TestSchedulesParse(t *testing.T) {
	s := config.ScheduleConfig{Name: "n", Cron: "0 2 * * *"}
	sched, err := s.Parse()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2025, 1, 1, 3, 0, 0, 0, time.UTC)
	if got := sched.Next(from); !got.Equal(time.Date(2025, 1, 2, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("Next = %s", got)
	}
}

func TestRequestDefaults(t *testing.T) {
	cfg := mustLoad(t, `
targets:
  prod:
    pathling: {url: http://p/fhir}
    defaults:
      exportUrl: https://c/fhir
      saveMode: overwrite
      types: [Patient]
      since: auto
      concurrency: queue
      timeout: 90m
`, nil)
	tc, _ := cfg.Target("prod")
	d := tc.Defaults.Request()
	if d.ExportURL != "https://c/fhir" || d.SaveMode != "overwrite" || !slices.Equal(d.Types, []string{"Patient"}) ||
		d.Since != "auto" || d.Concurrency != "queue" || d.Timeout != "1h30m" {
		t.Errorf("defaults = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults do not validate as a request: %v", err)
	}
}
