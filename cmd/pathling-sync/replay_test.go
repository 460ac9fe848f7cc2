package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// opsEnv is a running system for the operator commands: embedded JetStream,
// redis-server, the Pathling emulator in scripted mode, and (optionally)
// the service itself, all configured by one YAML file.
type opsEnv struct {
	t        *testing.T
	cfgPath  string
	natsURL  string
	redisURL string
	emu      *pathlingemu.Emulator
	js       jetstream.JetStream
	logs     *testenv.Buffer
}

// Export URLs the tests' targets allow; the emulator's scripts select jobs by them.
const (
	okSource   = "http://source.test/fhir"
	badSource  = "http://bad.test/fhir"
	slowSource = "http://slow.test/fhir"
)

// newOpsEnv starts NATS, Redis and the emulator and writes the config (targets
// "main" and "other"); the service is not started (see serve).
func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	ns := testenv.NATS(t)
	e := &opsEnv{t: t, natsURL: ns.ClientURL(), redisURL: testenv.Redis(t), logs: &testenv.Buffer{}}
	emu, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{okSource, badSource, slowSource}, AllowInsecureURLs: true, AllowInternalURLs: true,
		Mode: pathlingemu.ModeScripted,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	if err := emu.SetDefaultScript(pathlingemu.Script{Polls: 1}); err != nil {
		t.Fatal(err)
	}
	e.emu = emu
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	target := func(name string) string {
		return fmt.Sprintf(`
  %s:
    pathling:
      url: %s/fhir
    allowedExportUrls: [%s, %s, %s]
    defaults:
      exportUrl: %s
    poll:
      initial: 20ms
      max: 100ms
    retry:
      initial: 50ms
      max: 200ms
`, name, srv.URL, okSource, badSource, slowSource, okSource)
	}
	yaml := fmt.Sprintf(`
nats:
  url: %s
redis:
  url: %s
admin:
  addr: 127.0.0.1:0
log:
  level: debug
service:
  queueRetry: 100ms
targets:%s%s`, e.natsURL, e.redisURL, target("main"), target("other"))
	e.cfgPath = filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The stream as the service makes it, so that requests can be published before it runs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, e.js, natsbus.StreamConfig{
		Name: "PATHLING_SYNC", Subjects: []string{"pathling.sync.>"}, Storage: jetstream.FileStorage,
		MaxAge: 720 * time.Hour, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// serve runs the service until the test ends.
func (e *opsEnv) serve() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", e.cfgPath}, e.logs, e.logs, envFrom(nil)) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			e.t.Error("serve did not stop")
		}
	})
	testenv.Eventually(e.t, 20*time.Second, func() bool { return strings.Contains(e.logs.String(), "pathling-sync serving") },
		"service up: %s", e.logs.String())
}

// cli runs a pathling-sync command against the environment's config.
func (e *opsEnv) cli(args ...string) (code int, stdout, stderr string) {
	return e.cliCtx(context.Background(), args...)
}

func (e *opsEnv) cliCtx(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut testenv.Buffer
	code = run(ctx, append(args, "--config", e.cfgPath), &out, &errOut, envFrom(nil))
	return code, out.String(), errOut.String()
}

// publish publishes a SyncRequested as `request` does, without waiting.
func (e *opsEnv) publish(target, id string, req messages.SyncRequested) uint64 {
	e.t.Helper()
	body, _ := json.Marshal(req)
	env := messages.NewRequestEnvelope(id, "test", target, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := natsbus.PublishRequest(ctx, e.js, "pathling.sync.requested."+target, env, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// msg reads the stream message at seq.
func (e *opsEnv) msg(seq uint64) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "PATHLING_SYNC")
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		e.t.Fatalf("stream seq %d: %v", seq, err)
	}
	return m
}

func (e *opsEnv) lastSeq() uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "PATHLING_SYNC")
	if err != nil {
		e.t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// outcome returns the outcome event of requestID on target, if published.
func (e *opsEnv) outcome(target, requestID string) (kind string, body []byte, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "PATHLING_SYNC")
	if err != nil {
		return "", nil, false
	}
	for _, k := range []string{"completed", "failed"} {
		if m, err := s.GetLastMsgForSubject(ctx, "pathling.sync."+k+"."+target); err == nil &&
			m.Header.Get(messages.HeaderID) == requestID+"/"+k {
			return k, m.Data, true
		}
	}
	return "", nil, false
}

func decodeReplayReport(t *testing.T, out string) replayReport {
	t.Helper()
	var rep replayReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("replay --json output: %v\n%s", err, out)
	}
	return rep
}

func replayedOriginals(rep replayReport) []string {
	var ids []string
	for _, it := range rep.Replays {
		ids = append(ids, it.OriginalID)
	}
	return ids
}

// Ranges by sequence, by time and by target pick the right requests, in
// stream order; a dry run publishes nothing; a real run publishes each with
// a new id, ce-replayof naming the original, and concurrency "queue".
func TestReplayRanges(t *testing.T) {
	e := newOpsEnv(t)
	s1 := e.publish("main", "r1", messages.SyncRequested{SaveMode: "overwrite", Types: []string{"Patient"}, CorrelationID: "c-1"})
	s2 := e.publish("other", "r2", messages.SyncRequested{Since: "auto"})
	s3 := e.publish("main", "r3", messages.SyncRequested{Concurrency: "forbid", RequestedBy: "ops"})
	s4 := e.publish("main", "r4", messages.SyncRequested{})
	if s1 != 1 || s4 != 4 {
		t.Fatalf("sequences %d..%d, want 1..4", s1, s4)
	}

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"seq range", []string{"--from-seq", "2", "--to-seq", "3"}, []string{"r2", "r3"}},
		{"open seq range", []string{"--from-seq", "3"}, []string{"r3", "r4"}},
		{"target", []string{"--from-seq", "1", "--target", "main"}, []string{"r1", "r3", "r4"}},
		{"target and seq range", []string{"--from-seq", "2", "--target", "other"}, []string{"r2"}},
		{"since", []string{"--since", e.msg(s3).Time.Format(time.RFC3339Nano)}, []string{"r3", "r4"}},
		{"since and until", []string{"--since", e.msg(s1).Time.Format(time.RFC3339Nano), "--until", e.msg(s2).Time.Format(time.RFC3339Nano)}, []string{"r1", "r2"}},
		{"since a duration ago", []string{"--since", "1h"}, []string{"r1", "r2", "r3", "r4"}},
		{"nothing in range", []string{"--since", "2000-01-01", "--until", "2000-01-02"}, nil},
	}
	for _, c := range cases {
		code, out, errOut := e.cli(append([]string{"replay", "--dry-run", "--json"}, c.args...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, errOut)
		}
		rep := decodeReplayReport(t, out)
		if got := replayedOriginals(rep); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: replays %v, want %v", c.name, got, c.want)
		}
		if !rep.DryRun {
			t.Errorf("%s: dryRun false", c.name)
		}
	}
	if got := e.lastSeq(); got != 4 {
		t.Fatalf("dry runs published: last seq %d, want 4", got)
	}

	// The readable dry run lists what would be sent.
	code, out, _ := e.cli("replay", "--dry-run", "--from-seq", "1", "--to-seq", "1")
	if code != 0 || !strings.Contains(out, "would replay 1 request") || !strings.Contains(out, "r1 -> replay:r1:") ||
		!strings.Contains(out, "saveMode=overwrite") || !strings.Contains(out, "concurrency=queue") {
		t.Fatalf("dry run text (exit %d):\n%s", code, out)
	}

	// For real: r1 and r3, in order, as new requests.
	code, out, errOut := e.cli("replay", "--json", "--target", "main", "--from-seq", "1", "--to-seq", "3")
	if code != 0 {
		t.Fatalf("replay exit %d: %s", code, errOut)
	}
	rep := decodeReplayReport(t, out)
	if len(rep.Replays) != 2 || rep.Replays[0].OriginalID != "r1" || rep.Replays[1].OriginalID != "r3" {
		t.Fatalf("replays: %+v", rep.Replays)
	}
	for i, it := range rep.Replays {
		if it.PublishedSeq != uint64(5+i) {
			t.Errorf("%s published at seq %d, want %d (in order)", it.OriginalID, it.PublishedSeq, 5+i)
		}
		m := e.msg(it.PublishedSeq)
		env, _ := messages.ReadEnvelope(m.Header)
		if m.Subject != "pathling.sync.requested.main" || env.ReplayOf != it.OriginalID || env.ID != it.ID ||
			!strings.HasPrefix(env.ID, "replay:"+it.OriginalID+":") || m.Header.Get(messages.HeaderNatsMsgID) != env.ID ||
			env.Type != messages.TypeRequested || env.Subject != "main" || time.Since(env.Time) > time.Minute {
			t.Errorf("replay of %s: subject %s, headers %v", it.OriginalID, m.Subject, m.Header)
		}
		req, err := messages.DecodeRequested(m.Data)
		if err != nil || req.Concurrency != messages.ConcurrencyQueue {
			t.Errorf("replay of %s: body %s (%v): want concurrency queue", it.OriginalID, m.Data, err)
		}
	}
	first, _ := messages.DecodeRequested(e.msg(5).Data)
	if first.SaveMode != "overwrite" || len(first.Types) != 1 || first.Types[0] != "Patient" || first.CorrelationID != "c-1" {
		t.Errorf("replay body lost the original's fields: %+v", first)
	}
	third, _ := messages.DecodeRequested(e.msg(6).Data)
	if third.RequestedBy != "ops" {
		t.Errorf("replay body lost requestedBy: %+v", third)
	}
}

func TestReplayUsage(t *testing.T) {
	for _, args := range [][]string{
		{"replay"}, // no start
		{"replay", "--since", "1h", "--from-seq", "1"},
		{"replay", "--from-seq", "5", "--to-seq", "2"},
		{"replay", "--since", "yesterday-ish"},
		{"replay", "--from-seq", "1", "--target", "no.dots"},
		{"replay", "--from-seq", "1", "--include-replayed"},
		{"replay", "--from-seq", "1", "--reason", "conflict"},
		{"replay", "--from-seq", "1", "--only-failed", "--reason", "bogus"},
	} {
		var out, errOut testenv.Buffer
		// NATS is unreachable: the usage error must come first.
		code := run(context.Background(), args, &out, &errOut, envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1"}))
		if code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
	var out, errOut testenv.Buffer
	code := run(context.Background(), []string{"replay", "--from-seq", "1"}, &out, &errOut, envFrom(map[string]string{"NATS_URL": "nats://127.0.0.1:1"}))
	if code != exitInfra {
		t.Errorf("unreachable NATS: exit %d, want 3", code)
	}
}

// A mix of succeeding and failing syncs; replay --only-failed re-runs only
// the failed one, under a new id that names the original, queued; a second
// replay --only-failed finds it already replayed.
func TestReplayOnlyFailed(t *testing.T) {
	e := newOpsEnv(t)
	if err := e.emu.Script(pathlingemu.Script{ExportURL: badSource, Polls: 1, Outcome: pathlingemu.OutcomeFail,
		Failure: "Async Http resonse error: [statusCode: 403]"}); err != nil {
		t.Fatal(err)
	}
	e.serve()
	for _, r := range []struct {
		args []string
		code int
	}{
		{[]string{"--target", "main", "--id", "ok-1"}, 0},
		{[]string{"--target", "main", "--id", "bad-1", "--export-url", badSource}, exitSyncFailed},
		{[]string{"--target", "other", "--id", "ok-2"}, 0},
	} {
		if code, out, errOut := e.cli(append([]string{"request", "--wait", "--wait-timeout", "1m"}, r.args...)...); code != r.code {
			t.Fatalf("request %v: exit %d, want %d\n%s\n%s\n%s", r.args, code, r.code, out, errOut, e.logs.String())
		}
	}
	before := e.lastSeq()

	code, out, errOut := e.cli("replay", "--only-failed", "--from-seq", "1", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, errOut)
	}
	rep := decodeReplayReport(t, out)
	if got := replayedOriginals(rep); len(got) != 1 || got[0] != "bad-1" || rep.NotFailed != 2 {
		t.Fatalf("only-failed dry run: %+v", rep)
	}
	if e.lastSeq() != before {
		t.Fatal("dry run published")
	}
	// Narrowed to other reasons: bad-1 (import_failed) is left alone.
	code, out, _ = e.cli("replay", "--only-failed", "--reason", "conflict,timeout", "--from-seq", "1", "--dry-run", "--json")
	if rep = decodeReplayReport(t, out); code != 0 || len(rep.Replays) != 0 || len(rep.Skipped) != 1 || rep.Skipped[0].Reason != "failed with import_failed" {
		t.Fatalf("--reason conflict,timeout: exit %d %+v", code, rep)
	}
	code, out, _ = e.cli("replay", "--only-failed", "--reason", "import_failed", "--from-seq", "1", "--dry-run", "--json")
	if rep = decodeReplayReport(t, out); code != 0 || len(rep.Replays) != 1 {
		t.Fatalf("--reason import_failed: exit %d %+v", code, rep)
	}

	// The source is fixed: the replay succeeds.
	if err := e.emu.Script(pathlingemu.Script{ExportURL: badSource, Polls: 1}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = e.cli("replay", "--only-failed", "--from-seq", "1")
	if code != 0 || !strings.Contains(out, "replayed #") || !strings.Contains(out, "bad-1 as replay:bad-1:") {
		t.Fatalf("replay: exit %d\n%s\n%s", code, out, errOut)
	}
	var newID string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "replay:bad-1:") {
			newID = f
		}
	}
	var body []byte
	testenv.Eventually(t, 30*time.Second, func() bool {
		var kind string
		var ok bool
		kind, body, ok = e.outcome("main", newID)
		return ok && kind == "completed"
	}, "replay %s completes: %s", newID, e.logs.String())
	var c messages.SyncCompleted
	if err := json.Unmarshal(body, &c); err != nil || c.RequestID != newID || c.ExportURL != badSource {
		t.Fatalf("completed: %s (%v)", body, err)
	}
	m := e.msg(before + 1)
	if env, _ := messages.ReadEnvelope(m.Header); env.ID != newID || env.ReplayOf != "bad-1" {
		t.Fatalf("replayed request headers: %v", m.Header)
	}
	if req, _ := messages.DecodeRequested(m.Data); req.Concurrency != "queue" || req.ExportURL != badSource {
		t.Fatalf("replayed request body: %s", m.Data)
	}

	// Again: bad-1 was replayed (and its replay did not fail): nothing to do.
	code, out, _ = e.cli("replay", "--only-failed", "--from-seq", "1", "--json")
	rep = decodeReplayReport(t, out)
	if code != 0 || len(rep.Replays) != 0 || len(rep.Skipped) != 1 || !strings.Contains(rep.Skipped[0].Reason, newID) {
		t.Fatalf("second only-failed replay: exit %d %+v", code, rep)
	}
	code, out, _ = e.cli("replay", "--only-failed", "--include-replayed", "--from-seq", "1", "--dry-run", "--json")
	if rep = decodeReplayReport(t, out); code != 0 || len(rep.Replays) != 1 || rep.Replays[0].OriginalID != "bad-1" {
		t.Fatalf("--include-replayed: exit %d %+v", code, rep)
	}
}
