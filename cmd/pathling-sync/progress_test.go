package main

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

func TestProgressPrinterPlain(t *testing.T) {
	var b bytes.Buffer
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pp := newProgressPrinter(&b, t0)
	if pp.tty {
		t.Fatal("a buffer is no terminal")
	}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	polling := func(polls int, progress string) *runProgress {
		return &runProgress{Phase: "polling", Polls: polls, Progress: progress, Attempts: 1}
	}
	pp.show(at(1), &runProgress{Phase: "waiting"})
	pp.show(at(2), &runProgress{Phase: "waiting"}) // unchanged: nothing
	pp.show(at(3), &runProgress{Phase: "kicking_off", Attempts: 1})
	pp.show(at(4), polling(1, ""))
	pp.show(at(5), polling(2, "40%"))
	pp.show(at(6), polling(2, "40%"))  // unchanged
	pp.show(at(21), polling(2, "40%")) // unchanged, but 15 s since the last line
	pp.show(at(22), &runProgress{Phase: "polling", Polls: 3, Progress: "80%", Attempts: 2})
	pp.finish()
	want := `waiting (1s elapsed)
kicking_off (3s elapsed)
polling, 1 poll (4s elapsed)
polling, 2 polls, X-Progress 40% (5s elapsed)
polling, 2 polls, X-Progress 40% (21s elapsed)
polling, 3 polls, X-Progress 80%, attempt 2 (22s elapsed)
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	// Progress unknown (no Redis): the elapsed time every 15 s, as before.
	b.Reset()
	pp = newProgressPrinter(&b, t0)
	for s := 1; s <= 31; s++ {
		pp.show(at(s), nil)
	}
	if b.String() != "waiting... (15s elapsed)\nwaiting... (30s elapsed)\n" {
		t.Fatalf("unknown progress:\n%s", b.String())
	}
}

func TestProgressPrinterTerminal(t *testing.T) {
	var b bytes.Buffer
	t0 := time.Now()
	pp := &progressPrinter{w: &b, tty: true, start: t0, lastAt: t0}
	pp.show(t0.Add(time.Second), &runProgress{Phase: "polling", Polls: 12, Progress: "40%"})
	pp.show(t0.Add(2*time.Second), &runProgress{Phase: "polling", Polls: 13})
	pp.finish()
	pp.finish() // idempotent
	want := "\rpolling, 12 polls, X-Progress 40% (1s elapsed)" +
		"\rpolling, 13 polls (2s elapsed)" + strings.Repeat(" ", len(", X-Progress 40%")) + "\n"
	if b.String() != want {
		t.Fatalf("got %q\nwant %q", b.String(), want)
	}
}

// fakeRuns is a runLoader over a fixed record.
type fakeRuns struct {
	run *handlers.Run
	err error
}

func (f fakeRuns) LoadRun(context.Context, string, string) (*handlers.Run, error) {
	return f.run, f.err
}

func TestLoadProgress(t *testing.T) {
	ctx := context.Background()
	if p := loadProgress(ctx, nil, "t", "r"); p != nil {
		t.Errorf("no store: %+v", p)
	}
	if p := loadProgress(ctx, fakeRuns{err: handlers.ErrRunNotFound}, "t", "r"); p == nil || p.Phase != "waiting" {
		t.Errorf("no run yet: %+v", p)
	}
	if p := loadProgress(ctx, fakeRuns{err: context.DeadlineExceeded}, "t", "r"); p != nil {
		t.Errorf("store error: %+v", p)
	}
	r := &handlers.Run{State: handlers.RunPolling, Polls: 4, Progress: "55%", Attempts: 1, Driver: "replica-1"}
	if p := loadProgress(ctx, fakeRuns{run: r}, "t", "r"); p == nil || p.String() != "polling, 4 polls, X-Progress 55%" || p.Driver != "replica-1" {
		t.Errorf("polling: %+v", p)
	}
}

// waitClock is a clock whose waits of exactly due fire at once and whose
// other waits never do: a wait's deadline without waiting it out.
type waitClock struct {
	now time.Time
	due time.Duration
}

func (c waitClock) Now() time.Time { return c.now }

func (c waitClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if d == c.due {
		ch <- c.now.Add(d)
	}
	return ch
}

// request --wait gives up at its wait timeout (infrastructure, exit 3), and
// the timeout defaults to the sync's own plus 5 minutes.
func TestWaiterGivesUpAtItsDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		waitTimeout time.Duration
		req         messages.SyncRequested
		want        time.Duration
	}{
		{90 * time.Second, messages.SyncRequested{}, 90 * time.Second},
		{0, messages.SyncRequested{Timeout: "1h"}, time.Hour + 5*time.Minute},
		{0, messages.SyncRequested{}, 2*time.Hour + 5*time.Minute},
	} {
		var out testenv.Buffer
		w := &waiter{g: &globals{stdout: &out}, o: &requestOptions{waitTimeout: c.waitTimeout}, target: "t", requestID: "r",
			clock: waitClock{now: t0, due: c.want}}
		err := w.wait(t.Context(), c.req, make(chan streamhistory.Event))
		if !errors.Is(err, errInfra) || !strings.Contains(err.Error(), "no outcome within "+c.want.String()) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// The seed's crontab line, with `pathling-sync request --wait` in place of
// sync.sh: only the seed's variables are set (PATHLING_URL, SOURCE_EXPORT_URL
// as its $export endpoint); NATS and Redis come from the addresses file a
// `dev` would write. It exits 0 and, its output being no terminal, logs
// plain progress lines (phase, polls, X-Progress, elapsed).
func TestSeedCrontabLineWithRequestWait(t *testing.T) {
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	emu, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{okSource}, AllowInsecureURLs: true, AllowInternalURLs: true, Mode: pathlingemu.ModeScripted,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	// Long enough for the once-a-second progress reads to see both phases.
	if err := emu.SetDefaultScript(pathlingemu.Script{Duration: 3 * time.Second, ImportAfter: 1200 * time.Millisecond, Progress: []int{30, 60, 90}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	seedEnv := map[string]string{
		"PATHLING_URL":      srv.URL + "/fhir",
		"SOURCE_EXPORT_URL": okSource + "/$export",
	}

	// The service, configured by the same variables (plus where NATS and Redis are).
	serveEnv := map[string]string{
		"NATS_URL": ns.ClientURL(), "REDIS_URL": redisURL, "PATHLING_SYNC_ADMIN_ADDR": "127.0.0.1:0",
		"PATHLING_SYNC_TARGETS_DEFAULT_POLL_INITIAL": "100ms", "PATHLING_SYNC_TARGETS_DEFAULT_POLL_MAX": "200ms",
	}
	for k, v := range seedEnv {
		serveEnv[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, logs, logs, envFrom(serveEnv)) }()
	defer func() {
		cancel()
		<-done
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "pathling-sync serving") }, "service up: %s", logs.String())

	dir := t.TempDir()
	t.Setenv(devenv.DataDirEnv, dir)
	if err := devenv.WriteAddrs(dir, devenv.Addrs{NATSURL: ns.ClientURL(), RedisURL: redisURL}); err != nil {
		t.Fatal(err)
	}
	var out, errOut testenv.Buffer
	code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m"}, &out, &errOut, envFrom(seedEnv))
	if code != 0 {
		t.Fatalf("request --wait exited %d\nstdout:\n%s\nstderr:\n%s\nservice:\n%s", code, out.String(), errOut.String(), logs.String())
	}
	o := out.String()
	for _, want := range []string{"requested sync ", "polling, ", " polls", "X-Progress ", " elapsed)\n", "SyncCompleted in ", `"exportUrl": "` + okSource + `"`} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	if strings.Contains(o, "\r") {
		t.Errorf("not a terminal, yet the line was redrawn:\n%q", o)
	}
	if errOut.String() != "" {
		t.Errorf("stderr: %s", errOut.String())
	}
}
