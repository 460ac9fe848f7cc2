package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

func statusOf(t *testing.T, e *opsEnv, args ...string) statusReport {
	t.Helper()
	code, out, errOut := e.cli(append([]string{"status", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return rep
}

func findTarget(rep statusReport, name string) *targetStatus {
	for i := range rep.Targets {
		if rep.Targets[i].Name == name {
			return &rep.Targets[i]
		}
	}
	return nil
}

// A completed sync leaves a watermark and a last outcome; a long sync shows
// as running (polling, polls counting up) holding the lock; a queued
// request shows in the queue.
func TestStatusShowsRunningSyncLockWatermarksQueue(t *testing.T) {
	e := newOpsEnv(t)
	if err := e.emu.Script(pathlingemu.Script{ExportURL: slowSource, Polls: 1_000_000, ExportPolls: 2, Progress: []int{42}}); err != nil {
		t.Fatal(err)
	}
	// A history of jobs of slow-1's shape (and done-1's), so that slow-1's job
	// has an expected end (here from its X-Progress). Written first: the
	// service caches a history for a minute.
	opt, err := redis.ParseURL(e.redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store := redisstore.New(rdb, redisstore.WithPrefix("pathling-sync:"))
	for range 3 {
		if err := store.RecordDuration(context.Background(), "main", handlers.DurationShape(handlers.ImportParams{}), 10*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	e.serve()
	if code, out, errOut := e.cli("request", "--wait", "--wait-timeout", "1m", "--target", "main", "--id", "done-1"); code != 0 {
		t.Fatalf("first sync: exit %d\n%s\n%s", code, out, errOut)
	}
	e.publish("main", "slow-1", messages.SyncRequested{ExportURL: slowSource})
	var main *targetStatus
	testenv.Eventually(t, 30*time.Second, func() bool {
		main = findTarget(statusOf(t, e), "main")
		return main != nil && len(main.Running) == 1 && main.Running[0].Polls >= 3
	}, "slow-1 running with polls: %+v\n%s", main, e.logs.String())
	r := main.Running[0]
	if r.RequestID != "slow-1" || r.State != "polling" || r.Progress != "42%" || r.Attempts != 1 ||
		r.Driver == "" || !strings.Contains(r.StatusURL, "$job") || r.RunID == "" || r.StartedAt.IsZero() {
		t.Errorf("running sync: %+v", r)
	}
	if !r.ExpectedEnd.After(r.StartedAt) {
		t.Errorf("running sync: expected end %s, want one after its start %s", r.ExpectedEnd, r.StartedAt)
	}
	if !main.Configured || main.Lock == nil || main.Lock.RequestID != "slow-1" || main.Lock.Token <= 0 || main.Lock.TTLMs <= 0 {
		t.Errorf("lock: %+v (configured %v)", main.Lock, main.Configured)
	}
	if len(main.Watermarks) != 1 || !strings.HasPrefix(main.Watermarks[0].Key, okSource) ||
		time.Since(main.Watermarks[0].Time) > 5*time.Minute {
		t.Errorf("watermarks: %+v", main.Watermarks)
	}
	if lo := main.LastOutcome; lo == nil || lo.Kind != "completed" || lo.RequestID != "done-1" || !strings.Contains(lo.Summary, "1 file") {
		t.Errorf("last outcome: %+v", main.LastOutcome)
	}

	// A queued request waits its turn behind slow-1.
	e.publish("main", "queued-1", messages.SyncRequested{Concurrency: "queue"})
	testenv.Eventually(t, 20*time.Second, func() bool {
		main = findTarget(statusOf(t, e, "--target", "main"), "main")
		return main != nil && len(main.Queue) == 1 && main.Queue[0].RequestID == "queued-1"
	}, "queued-1 in the queue: %+v", main)

	// The other target is idle; a target only the stream knows shows too.
	e.publish("ghost", "g-1", messages.SyncRequested{})
	rep := statusOf(t, e)
	other, ghost := findTarget(rep, "other"), findTarget(rep, "ghost")
	if other == nil || other.Lock != nil || len(other.Running) != 0 || other.LastOutcome != nil {
		t.Errorf("other: %+v", other)
	}
	if ghost == nil || ghost.Configured {
		t.Errorf("ghost (seen in the stream only): %+v", ghost)
	}

	// The readable form.
	code, out, _ := e.cli("status", "--target", "main")
	for _, want := range []string{"target main (configured", "held by slow-1", "polling", "42%", "ENDS", "queued-1", okSource, "completed", "done-1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("status text lacks %q (exit %d):\n%s", want, code, out)
		}
	}
}

func TestStatusUsageAndInfra(t *testing.T) {
	var out, errOut testenv.Buffer
	if code := run(t.Context(), []string{"status", "--target", "a.b"}, &out, &errOut, envFrom(nil)); code != exitUsage {
		t.Errorf("bad target: exit %d", code)
	}
	if code := run(t.Context(), []string{"status"}, &out, &errOut, envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1"})); code != exitInfra {
		t.Errorf("unreachable NATS: exit %d, want 3", code)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond:                "850ms",
		42*time.Second + 300*time.Millisecond: "42s",
		3*time.Minute + 12*time.Second:        "3m12s",
		5*time.Hour + 4*time.Minute:           "5h4m",
		76 * time.Hour:                        "3d4h",
		-2 * time.Second:                      "-2s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
