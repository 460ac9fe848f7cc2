package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// loadTargets loads yaml and env as the service does and builds its
// targets.
func loadTargets(t *testing.T, yaml string, env map[string]string) map[string]handlers.Target {
	t.Helper()
	path := ""
	if yaml != "" {
		path = filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(path, envFrom(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ts, err := buildTargets(cfg, slog.New(slog.DiscardHandler), nil, nil)
	if err != nil {
		t.Fatalf("buildTargets: %v", err)
	}
	out := map[string]handlers.Target{}
	for _, ht := range ts {
		out[ht.Name] = ht
	}
	return out
}

func TestBuildTargets(t *testing.T) {
	ts := loadTargets(t, `
targets:
  prod:
    pathling:
      url: http://p/fhir
      exportUrlStyle: endpoint
    allowedExportUrls: [https://a/fhir/, https://b/fhir/$export]
    defaults: {exportUrl: https://c/fhir, saveMode: overwrite, timeout: 90m}
    timeout: 3h
    overlap: 0s
    poll: {initial: 1s, factor: 2, max: 10s, jitter: 0}
    retry: {initial: 2s, factor: 3, max: 20s, jitter: 0.5}
    maxJobLosses: 5
    keepJobs: true
  plain:
    pathling: {url: http://q/fhir}
    defaults: {exportUrl: https://d/fhir/$export}
`, nil)
	ht := ts["prod"]
	if ht.Name != "prod" || ht.Pathling == nil {
		t.Fatalf("name %q pathling %v", ht.Name, ht.Pathling)
	}
	if want := []string{"https://a/fhir/$export", "https://b/fhir/$export", "https://c/fhir/$export"}; !slices.Equal(ht.AllowedExportURLs, want) {
		t.Errorf("allowed = %v, want %v", ht.AllowedExportURLs, want)
	}
	// The target's Pathling normalises for the configured style.
	if u, err := ht.Pathling.NormalizeExportURL("https://a/fhir"); err != nil || u != "https://a/fhir/$export" {
		t.Errorf("normalize = %q, %v", u, err)
	}
	// The defaults as config's RequestDefaults.Request gives them (tested there).
	if d := ht.Defaults; d.ExportURL != "https://c/fhir" || d.SaveMode != "overwrite" || d.Timeout != "1h30m" {
		t.Errorf("defaults = %+v", d)
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

	// The default style is base; the default overlap 2m.
	plain := ts["plain"]
	if !slices.Equal(plain.AllowedExportURLs, []string{"https://d/fhir"}) {
		t.Errorf("plain allowlist = %v", plain.AllowedExportURLs)
	}
	if u, err := plain.Pathling.NormalizeExportURL("https://d/fhir/$export"); err != nil || u != "https://d/fhir" {
		t.Errorf("plain normalize = %q, %v", u, err)
	}
	if plain.Overlap != 2*time.Minute {
		t.Errorf("default overlap = %s", plain.Overlap)
	}
}

// The seed script's $export URL is allowed in both spellings once
// normalised.
func TestBuildTargetsFromSeedVariables(t *testing.T) {
	d := loadTargets(t, "", map[string]string{
		"PATHLING_URL":      "http://localhost:8080/fhir",
		"SOURCE_EXPORT_URL": "https://source-server.example.com/fhir/$export",
	})["default"]
	if !slices.Equal(d.AllowedExportURLs, []string{"https://source-server.example.com/fhir"}) {
		t.Errorf("handler allowlist = %v", d.AllowedExportURLs)
	}
	if u, err := d.Pathling.NormalizeExportURL(d.Defaults.ExportURL); err != nil || u != "https://source-server.example.com/fhir" {
		t.Errorf("normalised default = %q, %v", u, err)
	}
}

func TestExportURLStyle(t *testing.T) {
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
		style, err := exportURLStyle(tc.style)
		if err != nil {
			t.Fatalf("exportURLStyle(%q): %v", tc.style, err)
		}
		c, err := pathling.New("http://p/fhir", pathling.WithExportURLStyle(style))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := pathling.NewPort(c).NormalizeExportURL(tc.in); err != nil || got != tc.want {
			t.Errorf("style %q: NormalizeExportURL(%q) = %q, %v; want %q", tc.style, tc.in, got, err, tc.want)
		}
	}
	if _, err := exportURLStyle("weird"); err == nil {
		t.Error("unknown style accepted")
	}
	c, err := pathling.New("http://p/fhir")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pathling.NewPort(c).NormalizeExportURL("https://u:pw-123@s/%zz"); err == nil {
		t.Error("bad URL accepted")
	} else if got := err.Error(); strings.Contains(got, "pw-123") {
		t.Errorf("error leaks the password: %s", got)
	}
}

// Requests to one host beyond maxConnsPerHost wait for a connection rather
// than open more.
func TestSharedHTTPClientBoundsConnectionsPerHost(t *testing.T) {
	var mu sync.Mutex
	open, peak := 0, 0
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open++
			peak = max(peak, open)
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}
	srv.Start()
	defer srv.Close()
	hc := sharedHTTPClient()
	var wg sync.WaitGroup
	for range 2 * maxConnsPerHost {
		wg.Go(func() {
			if resp, err := hc.Get(srv.URL); err == nil {
				resp.Body.Close()
			}
		})
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return open >= maxConnsPerHost
	}, "connections opened")
	close(release)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if peak > maxConnsPerHost {
		t.Errorf("%d connections to one host at once, want at most %d", peak, maxConnsPerHost)
	}
}
