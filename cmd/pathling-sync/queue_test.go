package main

import (
	"context"
	"strings"
	"testing"
	"time"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// serve wires the release announcements: with queueRetry an hour, a queued
// request that finds its target busy still starts once the running sync
// releases the lock.
func TestServeStartsQueuedRequestOnRelease(t *testing.T) {
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	emu, srv := scriptedPathling(t, pathlingemu.Script{Polls: 30})
	cfgPath := writeConfigFile(t, `
nats:
  url: %s
redis:
  url: %s
admin:
  addr: 127.0.0.1:0
service:
  queueRetry: 1h
targets:
  main:
    pathling:
      url: %s/fhir
    defaults:
      exportUrl: http://source.test/fhir
    poll:
      initial: 20ms
      max: 100ms
`, ns.ClientURL(), redisURL, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, logs, logs, envFrom(nil)) }()
	defer func() {
		cancel()
		<-done
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "pathling-sync serving") }, "serving: %s", logs.String())

	request := func(id string, args ...string) chan int {
		out := &testenv.Buffer{}
		code := make(chan int, 1)
		go func() {
			code <- run(context.Background(), append([]string{"request", "--config", cfgPath, "--target", "main", "--wait", "--id", id}, args...), out, out, envFrom(nil))
		}()
		return code
	}
	first := request("first", "--types", "Patient")
	testenv.Eventually(t, 20*time.Second, func() bool { return emu.Counters().Accepted == 1 }, "first kicked off")
	second := request("second", "--types", "Observation", "--concurrency", "queue")
	for _, c := range []chan int{first, second} {
		select {
		case code := <-c:
			if code != 0 {
				t.Fatalf("request exited %d: %s", code, logs.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no outcome (queueRetry is an hour: the release was not heard): %s", logs.String())
		}
	}
	if c := emu.Counters(); c.Accepted != 2 {
		t.Fatalf("Pathling saw %d kick-offs, want 2", c.Accepted)
	}
}
