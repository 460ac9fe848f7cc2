package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// get returns the status and body of GET url ("" and 0 when unreachable).
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// newProbedService builds (does not run) a service on a test NATS server and
// the given Redis, with its admin listener on a free port and debug logs.
func newProbedService(t *testing.T, redisURL, instance string) (*Service, *testenv.Buffer) {
	t.Helper()
	ns := testenv.NATS(t)
	cfg := config.Default()
	cfg.NATS.URL = config.SecretURL(ns.ClientURL())
	cfg.Redis.URL = config.SecretURL(redisURL)
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Service.InstanceID = instance
	cfg.Service.ShutdownGrace = time.Second
	logs := &testenv.Buffer{}
	svc, err := NewService(context.Background(), cfg, newLogger(logs, config.LogConfig{Level: "debug"}), WithEnv(envFrom(nil)))
	if err != nil {
		t.Fatal(err)
	}
	return svc, logs
}

// /livez answers while the process runs, whatever its dependencies do;
// /readyz needs the consumer bound and Redis reachable, and answers 503 from
// the moment shutdown begins.
func TestLivenessAndReadiness(t *testing.T) {
	mr := miniredis.RunT(t)
	svc, logs := newProbedService(t, "redis://"+mr.Addr()+"/0", "health-test")
	base := "http://" + svc.AdminAddr()

	type probe struct {
		live, ready int
		readyBody   string
	}
	during := make(chan probe, 1)
	svc.onStopping = func() {
		live, _ := get(t, base+"/livez")
		ready, body := get(t, base+"/readyz")
		during <- probe{live, ready, body}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	testenv.Eventually(t, 20*time.Second, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 },
		"ready with NATS and Redis up: %s", logs.String())
	if code, body := get(t, base+"/livez"); code != 200 || body != "ok\n" {
		t.Fatalf("/livez: %d %q", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "target_info") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}

	mr.Close() // Redis goes away
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, body := get(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "Redis unreachable")
	}, "not ready with Redis down")
	if code, _ := get(t, base+"/livez"); code != 200 {
		t.Fatalf("/livez with Redis down: %d, want 200 (liveness checks no dependency)", code)
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 },
		"ready again once Redis is back")

	cancel()
	select {
	case p := <-during:
		if p.ready != http.StatusServiceUnavailable || !strings.Contains(p.readyBody, "shutting down") {
			t.Errorf("/readyz during shutdown: %d %q, want 503 shutting down", p.ready, p.readyBody)
		}
		if p.live != 200 {
			t.Errorf("/livez during shutdown: %d, want 200", p.live)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not begin")
	}
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A bad OTEL_* setting is a configuration error, reported before connecting.
func TestBadTelemetryEnvIsUsageError(t *testing.T) {
	cfg := config.Default()
	cfg.NATS.URL = "nats://127.0.0.1:1"
	_, err := NewService(context.Background(), cfg, slog.New(slog.DiscardHandler),
		WithEnv(envFrom(map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"})))
	var ue usageError
	if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), "OTEL_TRACES_EXPORTER") {
		t.Fatalf("error %v, want a usage error naming OTEL_TRACES_EXPORTER", err)
	}
}
