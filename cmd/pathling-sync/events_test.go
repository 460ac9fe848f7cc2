package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

func TestEventsListAndFollow(t *testing.T) {
	e := newOpsEnv(t)
	if err := e.emu.Script(pathlingemu.Script{ExportURL: badSource, Polls: 1, Outcome: pathlingemu.OutcomeFail,
		Failure: "Async Http resonse error: [statusCode: 403]"}); err != nil {
		t.Fatal(err)
	}
	e.serve()
	if code, out, errOut := e.cli("request", "--wait", "--wait-timeout", "1m", "--target", "main", "--id", "ok-1", "--save-mode", "overwrite"); code != 0 {
		t.Fatalf("ok-1: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, _, _ := e.cli("request", "--wait", "--wait-timeout", "1m", "--target", "other", "--id", "bad-1", "--export-url", badSource); code != exitSyncFailed {
		t.Fatalf("bad-1: exit %d, want 1", code)
	}

	code, out, errOut := e.cli("events")
	if code != 0 {
		t.Fatalf("events: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 events (2 requests, 2 outcomes), got:\n%s", out)
	}
	for i, want := range [][]string{
		{"#1 ", "requested", "main", "ok-1", "saveMode=overwrite"},
		{"#2 ", "completed", "main", "ok-1", "1 file in ", ", 2 polls, watermark 20"},
		{"#3 ", "requested", "other", "bad-1", "exportUrl=" + badSource},
		{"#4 ", "failed", "other", "bad-1", "import_failed (final)", "statusCode: 403"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q: %s", i+1, w, lines[i])
			}
		}
	}

	// Filters: target, type, time.
	if _, out, _ = e.cli("events", "--target", "other", "--type", "failed"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "bad-1") {
		t.Errorf("--target other --type failed:\n%s", out)
	}
	if _, out, _ = e.cli("events", "--type", "requested,completed"); strings.Count(out, "\n") != 3 || strings.Contains(out, "failed") {
		t.Errorf("--type requested,completed:\n%s", out)
	}
	if _, out, _ = e.cli("events", "--since", time.Now().Add(time.Hour).Format(time.RFC3339)); out != "" {
		t.Errorf("--since in the future:\n%s", out)
	}

	// JSON: one object per line.
	_, out, _ = e.cli("events", "--json", "--target", "main")
	var views []eventView
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var v eventView
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("--json line %q: %v", l, err)
		}
		views = append(views, v)
	}
	if len(views) != 2 || views[0].Kind != "requested" || views[0].ID != "ok-1" || views[1].Kind != "completed" ||
		views[1].ID != "ok-1/completed" || views[1].RequestID != "ok-1" || views[1].Type != messages.TypeCompleted || len(views[1].Body) == 0 {
		t.Fatalf("--json: %+v", views)
	}

	// Follow: new events appear until interrupted, which exits 0.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fout, ferr testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "--follow", "--target", "main", "--config", e.cfgPath}, &fout, &ferr, envFrom(nil))
	}()
	// The follower starts at new events; keep publishing until one shows (it may start after the first).
	n := 0
	testenv.Eventually(t, 20*time.Second, func() bool {
		n++
		e.publish("main", fmt.Sprintf("follow-%d", n), messages.SyncRequested{SaveMode: "append"})
		return strings.Contains(fout.String(), "saveMode=append")
	}, "followed event: %s %s", fout.String(), ferr.String())
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(fout.String(), "completed  main  follow-") },
		"followed outcome: %s", fout.String())
	if strings.Contains(fout.String(), "ok-1") {
		t.Errorf("--follow without --since printed history:\n%s", fout.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("events --follow exited %d: %s", code, ferr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("events --follow did not stop on interrupt")
	}

	// Follow with --since prints the history first.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	var hout testenv.Buffer
	done2 := make(chan int, 1)
	go func() {
		done2 <- run(ctx2, []string{"events", "-f", "--since", "1h", "--config", e.cfgPath}, &hout, &hout, envFrom(nil))
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(hout.String(), "bad-1") }, "history: %s", hout.String())
	cancel2()
	if code := <-done2; code != 0 {
		t.Fatalf("events -f --since exited %d", code)
	}
}

func TestEventsUsage(t *testing.T) {
	env := envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1"})
	for _, args := range [][]string{
		{"events", "--type", "started"},
		{"events", "--since", "last tuesday"},
		{"events", "--follow", "--until", "1h"},
		{"events", "--target", "x y"},
	} {
		var out, errOut testenv.Buffer
		if code := run(context.Background(), args, &out, &errOut, env); code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"2025-01-01T00:00:00Z":      time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		"2025-01-01T10:00:00+10:00": time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		"2025-01-01":                time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		"2025-01-01T08:30":          time.Date(2025, 1, 1, 8, 30, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"soon", "-5m", "d", "2025-13-01"} {
		if _, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q): no error", bad)
		}
	}
}

// A SyncCompleted without a watermark (an explicit since with none stored)
// says so instead of printing an empty instant.
func TestSummarizeCompletedWithoutWatermark(t *testing.T) {
	body := `{"requestId":"r","runId":"x","target":"main","exportUrl":"http://s/fhir","saveMode":"merge",` +
		`"since":"2025-01-01T00:00:00Z","pathlingJob":"j","outputs":2,"empty":false,"durationMs":1500,"polls":3,"attempts":1}`
	got := summarize(messages.KindCompleted, []byte(body), "")
	if !strings.Contains(got, "no watermark stored") || strings.Contains(got, "watermark ,") {
		t.Fatalf("summary %q", got)
	}
}
