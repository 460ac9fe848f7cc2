package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/handlers"
)

func TestNormalizeExportURL(t *testing.T) {
	for _, tc := range []struct{ style, in, want string }{
		{config.ExportURLBase, "https://s/fhir", "https://s/fhir"},
		{config.ExportURLBase, "https://s/fhir/", "https://s/fhir"},
		{config.ExportURLBase, "https://s/fhir/$export", "https://s/fhir"},
		{config.ExportURLBase, "https://s/fhir/%24export", "https://s/fhir"},
		{config.ExportURLBase, "https://s:8443/fhir/r4/$export/", "https://s:8443/fhir/r4"},
		{"", "https://s/fhir/$export", "https://s/fhir"},
		{config.ExportURLEndpoint, "https://s/fhir", "https://s/fhir/$export"},
		{config.ExportURLEndpoint, "https://s/fhir/$export", "https://s/fhir/$export"},
		{config.ExportURLEndpoint, "https://s/", "https://s/$export"},
	} {
		got, err := config.NormalizeExportURL(tc.style, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeExportURL(%q, %q) = %q, %v; want %q", tc.style, tc.in, got, err, tc.want)
		}
	}
	if _, err := config.NormalizeExportURL("weird", "https://s/fhir"); err == nil {
		t.Error("unknown style accepted")
	}
	if _, err := config.NormalizeExportURL(config.ExportURLBase, "https://u:pw-123@s/%zz"); err == nil {
		t.Error("bad URL accepted")
	} else if got := err.Error(); strings.Contains(got, "pw-123") {
		t.Errorf("error leaks the password: %s", got)
	}
}

type nopPathling struct{ handlers.Pathling }

func TestHandlerTarget(t *testing.T) {
	cfg := mustLoad(t, `
targets:
  prod:
    pathling:
      url: http://p/fhir
      exportUrlStyle: endpoint
    allowedExportUrls: [https://a/fhir/, https://b/fhir/$export]
    defaults:
      exportUrl: https://c/fhir
      saveMode: overwrite
      types: [Patient]
      since: auto
      concurrency: queue
      timeout: 90m
    timeout: 3h
    overlap: 0s
    poll: {initial: 1s, factor: 2, max: 10s, jitter: 0}
    retry: {initial: 2s, factor: 3, max: 20s, jitter: 0.5}
    maxJobLosses: 5
    keepJobs: true
`, nil)
	tc, _ := cfg.Target("prod")
	p := nopPathling{}
	ht := tc.HandlerTarget(p)
	if ht.Name != "prod" || ht.Pathling != p {
		t.Errorf("name %q pathling %v", ht.Name, ht.Pathling)
	}
	if want := []string{"https://a/fhir/$export", "https://b/fhir/$export", "https://c/fhir/$export"}; !slices.Equal(ht.AllowedExportURLs, want) {
		t.Errorf("allowed = %v, want %v", ht.AllowedExportURLs, want)
	}
	if u, err := ht.NormalizeExportURL("https://a/fhir"); err != nil || u != "https://a/fhir/$export" {
		t.Errorf("normalize = %q, %v", u, err)
	}
	d := ht.Defaults
	if d.ExportURL != "https://c/fhir" || d.SaveMode != "overwrite" || !slices.Equal(d.Types, []string{"Patient"}) ||
		d.Since != "auto" || d.Concurrency != "queue" || d.Timeout != "1h30m" {
		t.Errorf("defaults = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults do not validate as a request: %v", err)
	}
	if ht.Timeout != 3*time.Hour || ht.Overlap != 0 || ht.MaxJobLosses != 5 || !ht.KeepJobs {
		t.Errorf("timeout %s overlap %s losses %d keep %v", ht.Timeout, ht.Overlap, ht.MaxJobLosses, ht.KeepJobs)
	}
	if ht.Poll != (handlers.Backoff{Initial: time.Second, Factor: 2, Max: 10 * time.Second}) ||
		ht.Retry != (handlers.Backoff{Initial: 2 * time.Second, Factor: 3, Max: 20 * time.Second, Jitter: 0.5}) {
		t.Errorf("poll %+v retry %+v", ht.Poll, ht.Retry)
	}
	// A zero-jitter poll cadence is exact.
	if got := ht.Poll.Next(2); got != 4*time.Second {
		t.Errorf("poll.Next(2) = %s", got)
	}

	def := config.DefaultTarget()
	def.Name = "d"
	if got := def.HandlerTarget(nil).Overlap; got != 2*time.Minute {
		t.Errorf("default overlap = %s", got)
	}
}

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
