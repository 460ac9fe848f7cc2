package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// A Redis that stalls (here: a paused redis-server, which keeps its port and
// connections but answers nothing) makes /readyz answer 503 within its 2 s
// budget, inside a Kubernetes probe's 3 s timeout, instead of waiting for
// go-redis' own read timeout.
func TestReadyzAnswersWithinDeadlineWhenRedisStalls(t *testing.T) {
	rs := testenv.StartRedis(t)
	svc, logs := newProbedService(t, rs.URL, "readyz-test")
	base := "http://" + svc.AdminAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		rs.Resume() // let the shutdown's Redis calls finish promptly
		cancel()
		<-done
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 },
		"ready with NATS and Redis up: %s", logs.String())

	rs.Pause()
	// The probe's own deadline: 2 s of readiness budget plus slack for a
	// loaded machine, still under the Kubernetes probe's 3 s.
	const budget = 2500 * time.Millisecond
	pctx, pcancel := context.WithTimeout(context.Background(), budget)
	defer pcancel()
	req, _ := http.NewRequestWithContext(pctx, http.MethodGet, base+"/readyz", nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("/readyz with Redis paused gave no answer within %s (after %s): %v", budget, time.Since(start).Round(time.Millisecond), err)
	}
	defer resp.Body.Close()
	body := make([]byte, 256)
	n, _ := resp.Body.Read(body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body[:n]), "Redis unreachable") {
		t.Fatalf("/readyz with Redis paused: %d %q, want 503 Redis unreachable", resp.StatusCode, body[:n])
	}
}
