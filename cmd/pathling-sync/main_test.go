package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// The README walk-through: dev on embedded defaults, then request --wait
// (full, then since auto) from "another terminal".
func TestDevThenRequestWait(t *testing.T) {
	dev := startDev(t)
	dir, devOut, devErr := dev.dir, dev.out, dev.errOut
	if !strings.Contains(devOut.String(), "request --wait") {
		t.Fatalf("dev banner does not say how to request a sync:\n%s", devOut.String())
	}

	var out, errOut testenv.Buffer
	if code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m"}, &out, &errOut, envFrom(nil)); code != 0 {
		t.Fatalf("request --wait exited %d\nstdout: %s\nstderr: %s\ndev: %s", code, out.String(), errOut.String(), devErr.String())
	}
	if !strings.Contains(out.String(), "SyncCompleted") {
		t.Fatalf("no SyncCompleted in:\n%s", out.String())
	}
	out = testenv.Buffer{}
	if code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m", "--since", "auto"}, &out, &errOut, envFrom(nil)); code != 0 {
		t.Fatalf("incremental request exited %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), `"since"`) {
		t.Fatalf("incremental sync did not use the watermark:\n%s", out.String())
	}

	// A sync that fails exits 1: an export URL the target does not allow.
	out = testenv.Buffer{}
	code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m", "--export-url", "https://elsewhere.example/fhir"}, &out, &errOut, envFrom(nil))
	if code != exitSyncFailed || !strings.Contains(out.String(), "export_url_not_allowed") {
		t.Fatalf("want exit 1 with export_url_not_allowed, got %d:\n%s", code, out.String())
	}

	a, _ := devenv.ReadAddrs(dir)
	resp, err := http.Get("http://" + a.AdminAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"request", "--save-mode", "merj"}, &out, &errOut, envFrom(nil)); code != exitUsage {
		t.Fatalf("bad save mode: exit %d, want 2 (%s)", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "saveMode") {
		t.Fatalf("message does not name the field: %s", errOut.String())
	}
	if code := run(context.Background(), []string{"request", "--no-such-flag"}, &out, &errOut, envFrom(nil)); code != exitUsage {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
	errOut.Reset()
	env := envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1"})
	if code := run(context.Background(), []string{"request"}, &out, &errOut, env); code != exitInfra {
		t.Fatalf("unreachable NATS: exit %d, want 3 (%s)", code, errOut.String())
	}
	// The seed's TIMEOUT is seconds.
	env = envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1", "TIMEOUT": "soon"})
	if code := run(context.Background(), []string{"request"}, &out, &errOut, env); code != exitUsage {
		t.Fatalf("bad TIMEOUT: exit %d, want 2", code)
	}
}

// serve with a YAML config; SIGTERM (context cancel) mid-sync stops it
// within 10 s and leaves the run for another instance, which adopts it.
func TestServeShutdownLeavesRunForAdoption(t *testing.T) {
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	emu, srv := scriptedPathling(t, pathlingemu.Script{Polls: 25})
	cfgPath := writeConfigFile(t, `
nats:
  url: %s
  consumer:
    ackWait: 1s
redis:
  url: %s
  lockTTL: 3s
admin:
  addr: 127.0.0.1:0
log:
  level: debug
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
	serve := func() (context.CancelFunc, chan int, *testenv.Buffer) {
		ctx, cancel := context.WithCancel(context.Background())
		logs := &testenv.Buffer{}
		done := make(chan int, 1)
		go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, logs, logs, envFrom(nil)) }()
		return cancel, done, logs
	}
	stop1, done1, logs1 := serve()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs1.String(), "pathling-sync serving") }, "first instance up: %s", logs1.String())

	reqOut := &testenv.Buffer{}
	reqDone := make(chan int, 1)
	go func() {
		reqDone <- run(context.Background(), []string{"request", "--config", cfgPath, "--target", "main", "--wait", "--id", "shutdown-1"}, reqOut, reqOut, envFrom(nil))
	}()
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, j := range emu.Counters().Jobs {
			if j.Polls >= 2 {
				return true
			}
		}
		return false
	}, "first instance polling")
	start := time.Now()
	stop1()
	select {
	case code := <-done1:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, logs1.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop within 10 s of SIGTERM")
	}
	t.Logf("stopped in %s", time.Since(start))

	stop2, done2, logs2 := serve()
	defer func() {
		stop2()
		<-done2
	}()
	select {
	case code := <-reqDone:
		if code != 0 {
			t.Fatalf("request exited %d: %s\n%s", code, reqOut.String(), logs2.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no outcome after the restart: %s", logs2.String())
	}
	if c := emu.Counters(); c.Accepted != 1 {
		t.Fatalf("Pathling saw %d kick-offs, want 1 (adopted, not re-kicked)", c.Accepted)
	}
	if !strings.Contains(logs2.String(), "adopting run") {
		t.Fatalf("second instance did not adopt:\n%s", logs2.String())
	}
}

func TestEnvTableInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	writeEnvTable(&b)
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.Contains(string(readme), line) {
			t.Errorf("README lacks the env reference line (regenerate with `go run ./cmd/pathling-sync env`):\n%s", line)
			return
		}
	}
}

// devRun is a `pathling-sync dev` running in the test's process, with its
// data folder (and so its addresses file) in a temp dir.
type devRun struct {
	dir         string
	out, errOut *testenv.Buffer
}

// startDev runs `dev` until the test ends (it must then stop within 15 s)
// and waits until it has written its addresses.
func startDev(t *testing.T) *devRun {
	t.Helper()
	d := &devRun{dir: t.TempDir(), out: &testenv.Buffer{}, errOut: &testenv.Buffer{}}
	t.Setenv(devenv.DataDirEnv, d.dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--data-dir", d.dir, "--patients", "5"}, d.out, d.errOut, envFrom(nil))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("dev exited %d: %s", code, d.errOut.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("dev did not stop within 15 s")
		}
	})
	testenv.Eventually(t, 30*time.Second, func() bool {
		a, err := devenv.ReadAddrs(d.dir)
		return err == nil && a.NATSURL != ""
	}, "dev to write its addresses")
	// The addresses come before the durable consumer, which starts at new
	// messages: a request published in between would never be seen.
	testenv.Eventually(t, 30*time.Second, func() bool { _, ok := devReady(d.dir); return ok }, "dev to be ready (consumer bound)")
	return d
}

// devReady reports whether the dev run whose data folder is dir has
// written its addresses and answers /readyz with 200 (its consumer bound).
func devReady(dir string) (devenv.Addrs, bool) {
	a, err := devenv.ReadAddrs(dir)
	if err != nil || a.AdminAddr == "" {
		return a, false
	}
	resp, err := http.Get("http://" + a.AdminAddr + "/readyz")
	if err != nil {
		return a, false
	}
	resp.Body.Close()
	return a, resp.StatusCode == http.StatusOK
}

// scriptedPathling starts a Pathling emulator in scripted mode that allows
// exports from http://source.test/fhir (edit changes its configuration), with
// script as every job's; both stop with the test.
func scriptedPathling(t *testing.T, script pathlingemu.Script, edit ...func(*pathlingemu.Config)) (*pathlingemu.Emulator, *httptest.Server) {
	t.Helper()
	cfg := pathlingemu.Config{
		AllowableExportURLs: []string{"http://source.test/fhir"}, AllowInsecureURLs: true, AllowInternalURLs: true,
		Mode: pathlingemu.ModeScripted,
	}
	for _, e := range edit {
		e(&cfg)
	}
	emu, err := pathlingemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	if err := emu.SetDefaultScript(script); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return emu, srv
}

// writeConfigFile writes the configuration fmt.Sprintf(format, args...) to a
// file of the test's and returns its path.
func writeConfigFile(t *testing.T, format string, args ...any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(format, args...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
