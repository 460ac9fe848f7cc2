package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// Two replicas of serve, one schedule ticking every second and a chain from
// its target to another: each tick is one SyncRequested (and one sync), and
// each of its completions one chained sync, on the real clock.
func TestServeSchedulesAndChainsAcrossReplicas(t *testing.T) {
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	emu, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{"http://source.test/fhir"}, AllowInsecureURLs: true, AllowInternalURLs: true,
		Mode: pathlingemu.ModeScripted,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	srv := httptest.NewServer(emu)
	defer srv.Close()
	cfgPath := writeConfigFile(t, `
nats: {url: %s}
redis: {url: %s}
admin: {addr: "127.0.0.1:0"}
targets:
  main:
    pathling: {url: %s/fhir}
    defaults: {exportUrl: http://source.test/fhir}
    poll: {initial: 20ms, max: 100ms}
    schedules:
      - {name: every-second, cron: "@every 1s", request: {saveMode: overwrite, concurrency: queue}}
  mirror:
    pathling: {url: %s/fhir}
    defaults: {exportUrl: http://source.test/fhir}
    poll: {initial: 20ms, max: 100ms}
chains:
  - {name: main-to-mirror, on: {target: main}, request: {target: mirror, since: auto, concurrency: queue}}
`, ns.ClientURL(), redisURL, srv.URL, srv.URL)
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		logs := &testenv.Buffer{}
		done := make(chan int, 1)
		env := envFrom(map[string]string{"PATHLING_SYNC_SERVICE_INSTANCE_ID": fmt.Sprintf("replica-%d", i)})
		go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, logs, logs, env) }()
		defer func() {
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("replica %d exited %d: %s", i, code, logs.String())
				}
			case <-time.After(15 * time.Second):
				t.Errorf("replica %d did not stop", i)
			}
		}()
		testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "schedules started") }, "replica %d up: %s", i, logs.String())
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	type event struct {
		id, subject string
		body        []byte
	}
	read := func() []event {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "PATHLING_SYNC")
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []event
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, event{id: m.Header.Get(messages.HeaderID), subject: m.Subject, body: m.Data})
		}
		return out
	}
	count := func(evs []event, subject string) int {
		n := 0
		for _, e := range evs {
			if e.subject == subject {
				n++
			}
		}
		return n
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return count(read(), "pathling.sync.completed.mirror") >= 3
	}, "three chained syncs of mirror")

	evs := read()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.id] {
			t.Errorf("event %s stored twice", e.id)
		}
		seen[e.id] = true
		switch e.subject {
		case "pathling.sync.requested.main":
			tick, ok := strings.CutPrefix(e.id, "schedule:main:every-second:")
			if _, err := time.Parse(time.RFC3339, tick); !ok || err != nil {
				t.Errorf("scheduled request id %q", e.id)
			}
		case "pathling.sync.completed.main":
			var c messages.SyncCompleted
			_ = json.Unmarshal(e.body, &c)
			if c.RequestedBy != "schedule:every-second" || c.SaveMode != "overwrite" {
				t.Errorf("scheduled sync: %s", e.body)
			}
		case "pathling.sync.requested.mirror":
			if !strings.HasPrefix(e.id, "chain:main-to-mirror:schedule:main:every-second:") {
				t.Errorf("chained request id %q", e.id)
			}
		case "pathling.sync.failed.main", "pathling.sync.failed.mirror":
			t.Errorf("a sync failed: %s", e.body)
		}
	}
	t.Logf("%d requests of main, %d completions of main, %d of mirror", count(evs, "pathling.sync.requested.main"),
		count(evs, "pathling.sync.completed.main"), count(evs, "pathling.sync.completed.mirror"))
}
