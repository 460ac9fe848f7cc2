package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/messages"
)

// scenario is one row of the table.
type scenario struct {
	name string
	ci   bool // in the bounded subset CI runs
	run  func(h *harness)
}

func scenarios() []scenario {
	return []scenario{
		{"happy-path", true, happyPath},
		{"kill-9-mid-poll", true, func(h *harness) { replicaDies(h, syscall.SIGKILL) }},
		{"sigterm-mid-poll", true, func(h *harness) { replicaDies(h, syscall.SIGTERM) }},
		{"sigstop-past-lock-ttl", true, sigstopPastLock},
		{"pathling-restart-mid-job", true, pathlingRestart},
		{"pathling-outage-past-timeout", false, pathlingOutage},
		{"5xx-429-bursts", true, errorBursts},
		{"redis-sigstop-20s", false, redisPause},
		{"redis-restart-aof", false, func(h *harness) { redisRestart(h, true) }},
		{"redis-restart-no-persistence", false, func(h *harness) { redisRestart(h, false) }},
		{"nats-kill-restart", false, natsRestart},
		{"nats-cluster-node-loss", false, func(h *harness) { natsClusterLoss(h, false) }},
		{"nats-cluster-leader-loss", false, func(h *harness) { natsClusterLoss(h, true) }},
		{"nats-cluster-cold-start", false, natsClusterColdStart},
		{"redis-cluster-happy", false, redisClusterHappy},
		{"redis-cluster-master-paused", false, redisClusterPaused},
		{"duplicate-storm-same-id", true, stormSameID},
		{"duplicate-storm-many-ids", false, stormManyIDs},
		{"clock-skew-10m", false, clockSkew},
		{"bad-input-table", true, badInput},
		{"secret-scan", true, secretScan},
	}
}

// happyPath: a full sync, then an incremental one; the baseline every other row departs from.
func happyPath(h *harness) {
	h.start(setup{})
	h.request("full", nil)
	h.completes("full", 60*time.Second)
	h.finalSync()
}

// replicaDies: the replica polling a job is killed (SIGKILL) or asked to stop (SIGTERM); the
// request is redelivered to the other replica, which adopts the job: one job, one outcome.
func replicaDies(h *harness, sig syscall.Signal) {
	h.start(setup{exportDelay: 4 * time.Second})
	h.request("r1", nil)
	driver := h.waitDriving("r1")
	driver.p.signal(h.t, sig)
	driver.p.waitExit(h.t, 20*time.Second)
	h.completes("r1", 90*time.Second)
	h.waitSettled(30 * time.Second)
	h.expect(h.mustJobsCreated() == 1, "the survivor kicked off again instead of adopting: %d jobs", h.mustJobsCreated())
	h.finalSync()
}

// sigstopPastLock: the driving replica is frozen past its lock TTL and ack wait; the other
// replica takes the run over and finishes it; the frozen one, resumed, is fenced and publishes
// nothing.
func sigstopPastLock(h *harness) {
	h.start(setup{exportDelay: 4 * time.Second})
	h.request("r1", nil)
	driver := h.waitDriving("r1")
	driver.p.signal(h.t, syscall.SIGSTOP)
	h.completes("r1", 90*time.Second)
	driver.p.signal(h.t, syscall.SIGCONT)
	// The resumed replica notices it lost the run (its renewal or next write is refused) and drops it.
	h.waitFor(60*time.Second, driver.id+" drops the run after SIGCONT", func() (bool, error) {
		n, err := h.metric(driver, "pathling_sync_syncs_in_flight")
		return err == nil && n == 0, err
	})
	h.waitSettled(30 * time.Second)
	h.expect(h.mustJobsCreated() == 1, "%d Pathling jobs for one request", h.mustJobsCreated())
	h.finalSync()
}

// pathlingRestart: Pathling restarts mid-job (forgets its jobs; 404 on the next poll): the
// service kicks the same parameters off again.
func pathlingRestart(h *harness) {
	h.start(setup{exportDelay: 4 * time.Second})
	h.request("r1", nil)
	h.waitDriving("r1")
	h.mustSend(http.MethodPost, h.pathlingBase+"/_emulator/restart", nil)
	h.completes("r1", 90*time.Second)
	h.expect(h.mustJobsCreated() == 2, "want one re-kick after the restart, got %d jobs", h.mustJobsCreated())
	h.finalSync()
}

// pathlingOutage (issue #8 item 1): Pathling answers 503 to every poll and DELETE for longer
// than a sync's timeout, so the timeout's DELETE fails and the job lives on. Changes are made at
// the source, the outage ends, and the next identical since:auto request follows: it must not
// take the orphan's older export for its own (its watermark would be past the data), and the
// final sync must bring Pathling level with the source.
func pathlingOutage(h *harness) {
	h.start(setup{exportDelay: 12 * time.Second})
	h.request("base", map[string]any{"since": "auto"})
	h.completes("base", 90*time.Second)
	h.request("timed-out", map[string]any{"since": "auto", "timeout": "4s"})
	h.waitDriving("timed-out")
	inject := h.pathlingBase + "/_emulator/inject"
	h.mustSend(http.MethodPost, inject, map[string]any{"target": "poll", "status": 503, "count": 100000})
	h.mustSend(http.MethodPost, inject, map[string]any{"target": "delete", "status": 503, "count": 100000})
	ev := h.waitOutcome("timed-out", 60*time.Second)
	h.expect(ev.kind == messages.KindFailed, "timed-out: %s", ev)
	h.touch(3) // after the orphan's export snapshot
	// Let the changes age past the 1 s overlap, as changes hours before the next sync would.
	h.hold(2 * time.Second)
	h.mustSend(http.MethodDelete, h.pathlingBase+"/_emulator/injections", nil)
	h.request("next", map[string]any{"since": "auto"})
	h.completes("next", 90*time.Second)
	h.finalSync()
}

// errorBursts: 503s at kick-off, 429s (Retry-After) and 502s on polls, and 429s from the source
// to Pathling: retried, one job, one outcome.
func errorBursts(h *harness) {
	h.start(setup{})
	inject := h.pathlingBase + "/_emulator/inject"
	h.mustSend(http.MethodPost, inject, map[string]any{"target": "kickoff", "status": 503, "count": 2})
	h.mustSend(http.MethodPost, inject, map[string]any{"target": "poll", "status": 429, "count": 3, "retryAfter": "1"})
	h.mustSend(http.MethodPost, inject, map[string]any{"target": "poll", "status": 502, "count": 3})
	h.mustSend(http.MethodPost, h.sourceBase+"/_source/faults", map[string]any{"stage": "status", "status": 429, "count": 2, "retryAfterSeconds": 1})
	h.request("r1", nil)
	h.completes("r1", 90*time.Second)
	h.expect(h.mustJobsCreated() == 1, "%d Pathling jobs for one request", h.mustJobsCreated())
	h.finalSync()
}

// redisPause: Redis frozen (SIGSTOP) for 20 s mid-poll, far past the 6 s lock TTL; the run is
// given up and adopted, never duplicated.
func redisPause(h *harness) {
	h.start(setup{exportDelay: 4 * time.Second, redis: "aof"})
	h.request("r1", nil)
	h.waitDriving("r1")
	h.redis[0].p.signal(h.t, syscall.SIGSTOP)
	h.hold(20 * time.Second)
	h.redis[0].p.signal(h.t, syscall.SIGCONT)
	h.completes("r1", 90*time.Second)
	h.settledWithOneJob()
}

// redisRestart: Redis is killed (-9) mid-poll and restarted, with AOF (appendfsync always: no
// loss) or without persistence (issue #8 item 3: everything lost, fence counter included). A
// second request for another type set arrives while the first job still runs: it must not start
// a second import on the same Pathling.
func redisRestart(h *harness, aof bool) {
	s := setup{exportDelay: 6 * time.Second, redis: "aof"}
	if !aof {
		s.redis = "plain"
	}
	h.start(s)
	h.request("r1", nil)
	h.waitDriving("r1")
	red := h.redis[0]
	red.p.kill9(h.t)
	red.p.restart(h.t, h.dir)
	h.waitRedis()
	h.request("r2", map[string]any{"types": []string{"Patient"}})
	ev := h.waitOutcome("r1", 90*time.Second)
	if aof {
		h.expect(ev.kind == messages.KindCompleted, "r1: %s", ev)
	} else {
		// Redis forgot r1's lock: r2 may take the target first, and r1 then gives way (its job
		// DELETEd) with a retryable failure. Not promised: r1 completing. Promised: one import.
		h.expect(ev.kind == messages.KindCompleted || retryable(ev), "r1: %s", ev)
	}
	h.waitOutcome("r2", 90*time.Second)
	h.waitSettled(60 * time.Second)
	h.finalSync()
}

// natsRestart: the only nats-server is killed (-9) mid-poll and restarted on its store: the
// replicas reconnect, the outcome is published once.
func natsRestart(h *harness) {
	h.start(setup{exportDelay: 4 * time.Second})
	h.request("r1", nil)
	h.waitDriving("r1")
	n := h.nats[0]
	n.p.kill9(h.t)
	n.p.restart(h.t, h.dir)
	h.waitNATSNode(n)
	h.completes("r1", 90*time.Second)
	h.settledWithOneJob()
}

// natsClusterLoss: a 3-node JetStream cluster, stream with 3 replicas; mid-poll one node is
// killed (-9): a follower, or the stream's leader. Two nodes keep the quorum.
func natsClusterLoss(h *harness, leader bool) {
	h.start(setup{exportDelay: 4 * time.Second, natsNodes: 3, staggered: true})
	h.request("r1", nil)
	h.waitDriving("r1")
	s, err := h.js.Stream(h.ctx, streamName)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.ctx)
	if err != nil || info.Cluster == nil {
		h.t.Fatalf("stream cluster info: %v", err)
	}
	var victim *natsNode
	for _, n := range h.nats {
		if (n.name == info.Cluster.Leader) == leader {
			victim = n
			break
		}
	}
	if victim == nil {
		h.t.Fatalf("no node to kill (leader %q)", info.Cluster.Leader)
	}
	h.t.Logf("killing %s (stream leader %s)", victim.name, info.Cluster.Leader)
	victim.p.kill9(h.t)
	h.completes("r1", 90*time.Second)
	h.settledWithOneJob()
}

// natsClusterColdStart: two replicas start at the same moment against a fresh 3-node cluster,
// both creating the R3 stream; both must come up and sync.
func natsClusterColdStart(h *harness) {
	h.start(setup{natsNodes: 3})
	h.request("full", nil)
	h.completes("full", 60*time.Second)
	h.finalSync()
}

func redisClusterHappy(h *harness) {
	h.start(setup{redis: "cluster"})
	h.request("full", nil)
	h.completes("full", 60*time.Second)
	h.finalSync()
}

// redisClusterPaused: the master holding the target's slot is frozen for 10 s (past the lock
// TTL) mid-poll; the other masters stay up.
func redisClusterPaused(h *harness) {
	h.start(setup{redis: "cluster", exportDelay: 4 * time.Second})
	h.request("r1", nil)
	h.waitDriving("r1")
	master := h.redisMasterFor("pathling-sync:{" + target + "}:lock")
	master.p.signal(h.t, syscall.SIGSTOP)
	h.hold(10 * time.Second)
	master.p.signal(h.t, syscall.SIGCONT)
	h.completes("r1", 90*time.Second)
	h.settledWithOneJob()
}

// stormSameID: one request id published 40 times: 20 with its Nats-Msg-Id (JetStream drops the
// repeats) and 20 with distinct Nats-Msg-Ids (all stored, all delivered): one job, one outcome.
func stormSameID(h *harness) {
	h.start(setup{replicas: 3})
	raw, _ := json.Marshal(h.body(nil))
	subject := messages.Subjects{}.Requested(target)
	for i := range 40 {
		h.publish("storm", subject, raw, func(hd nats.Header) {
			if i%2 == 1 {
				hd.Set(messages.HeaderNatsMsgID, fmt.Sprintf("storm-copy-%d", i))
			}
		})
	}
	h.completes("storm", 90*time.Second)
	h.waitSettled(90 * time.Second)
	h.expect(h.mustJobsCreated() == 1, "%d Pathling jobs for one request id", h.mustJobsCreated())
	h.finalSync()
}

// stormManyIDs: 20 requests (forbid) and 4 (queue) for one target at once: one import at a time,
// every request answered once (conflict, or its turn).
func stormManyIDs(h *harness) {
	h.start(setup{replicas: 3})
	for i := range 24 {
		fields := map[string]any{"correlationId": "storm"}
		if i%6 == 5 {
			fields["concurrency"] = "queue"
		}
		h.request(fmt.Sprintf("many-%02d", i), fields)
	}
	h.waitSettled(180 * time.Second)
	completed := 0
	for _, evs := range h.outcomes() {
		if len(evs) > 0 && evs[0].kind == messages.KindCompleted {
			completed++
		}
	}
	h.expect(completed >= 1, "no request of the storm completed")
	h.finalSync()
}

// clockSkew (issue #8 item 6): the source's and Pathling's clocks run 10 minutes behind the
// replicas'. A watermark from the replica's clock would be 10 minutes past the data.
func clockSkew(h *harness) {
	h.start(setup{clockOffset: -10 * time.Minute})
	h.request("first", map[string]any{"since": "auto"})
	h.completes("first", 60*time.Second)
	h.touch(3)
	h.request("second", map[string]any{"since": "auto"})
	h.completes("second", 60*time.Second)
	h.finalSync()
}

// badInput: invalid requests each get one SyncFailed and are terminated, never redelivered, and
// start nothing on Pathling.
func badInput(h *harness) {
	h.start(setup{replicas: 1})
	src := h.sourceBase + "/fhir"
	subject := messages.Subjects{}.Requested(target)
	cases := []struct {
		name    string
		subject string
		body    string
		edit    func(nats.Header)
	}{
		{name: "not-json", body: `{"exportUrl":`},
		{name: "json-array", body: `[]`},
		{name: "json-null", body: `null`},
		{name: "json-string", body: `"sync please"`},
		{name: "unknown-field", body: fmt.Sprintf(`{"exportUrl":%q,"bogus":1}`, src)},
		{name: "savemode-wrong-type", body: fmt.Sprintf(`{"exportUrl":%q,"saveMode":5}`, src)},
		{name: "savemode-unknown", body: fmt.Sprintf(`{"exportUrl":%q,"saveMode":"upsert"}`, src)},
		{name: "since-not-instant", body: fmt.Sprintf(`{"exportUrl":%q,"since":"yesterday"}`, src)},
		{name: "since-in-future", body: fmt.Sprintf(`{"exportUrl":%q,"since":"2999-01-01T00:00:00Z"}`, src)},
		{name: "until-not-instant", body: fmt.Sprintf(`{"exportUrl":%q,"until":"2025-13-01"}`, src)},
		{name: "types-wrong-type", body: fmt.Sprintf(`{"exportUrl":%q,"types":"Patient"}`, src)},
		{name: "concurrency-unknown", body: fmt.Sprintf(`{"exportUrl":%q,"concurrency":"maybe"}`, src)},
		{name: "timeout-unparsable", body: fmt.Sprintf(`{"exportUrl":%q,"timeout":"forever"}`, src)},
		{name: "export-url-missing", body: `{"saveMode":"merge"}`},
		{name: "export-url-not-allowed", body: `{"exportUrl":"http://127.0.0.1:1/fhir"}`},
		{name: "export-url-ftp", body: `{"exportUrl":"ftp://127.0.0.1/fhir"}`},
		{name: "overwrite-with-since", body: fmt.Sprintf(`{"exportUrl":%q,"saveMode":"overwrite","since":"2020-01-01T00:00:00Z"}`, src)},
		{name: "body-over-64KiB", body: fmt.Sprintf(`{"exportUrl":%q,"requestedBy":%q}`, src, strings.Repeat("x", 70<<10))},
		{name: "unknown-target", subject: messages.Subjects{}.Requested("no-such-target"), body: fmt.Sprintf(`{"exportUrl":%q}`, src)},
		{name: "ce-type-completed", body: fmt.Sprintf(`{"exportUrl":%q}`, src),
			edit: func(hd nats.Header) { hd.Set(messages.HeaderType, messages.TypeCompleted) }},
	}
	for _, c := range cases {
		sub := c.subject
		if sub == "" {
			sub = subject
		}
		h.publish("bad-"+c.name, sub, []byte(c.body), c.edit)
	}
	h.waitSettled(90 * time.Second)
	outs := h.outcomes()
	for _, c := range cases {
		evs := outs["bad-"+c.name]
		h.expect(len(evs) == 1 && evs[0].kind == messages.KindFailed && finalRefusal(evs[0]),
			"%s: want one SyncFailed invalid_request, unknown_target or export_url_not_allowed, got %v", c.name, evs)
	}
	info, err := h.consumerInfo()
	if err != nil {
		h.t.Fatal(err)
	}
	h.expect(info.NumRedelivered == 0, "%d bad requests redelivered", info.NumRedelivered)
	h.expect(h.mustJobsCreated() == 0, "bad input started %d Pathling jobs", h.mustJobsCreated())
	h.finalSync()
}

// secretScan (issue #8 item 5): a client secret (OAuth2 client credentials against a token
// endpoint run by the test), a Redis password, and an export URL with user:password@; then every
// event, every log line of every process (debug level), `pathling-sync status` and /metrics are
// searched for each secret.
func secretScan(h *harness) {
	clientSecret := "faults-client-secret-" + randomHex(8)
	accessToken := "faults-access-token-" + randomHex(8)
	urlPassword := "faults-url-pw-" + randomHex(6)
	h.redisPassword = "faults-redis-pw-" + randomHex(6)
	h.secrets = append(h.secrets, clientSecret, accessToken, urlPassword, h.redisPassword)
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": accessToken, "token_type": "bearer", "expires_in": 3600})
	}))
	h.t.Cleanup(tokens.Close)
	h.start(setup{replica: replicaOptions{logLevel: "debug", auth: map[string]any{
		"type": "client_credentials", "tokenUrl": tokens.URL + "/token", "clientId": "pathling-sync", "clientSecret": clientSecret,
	}}})
	h.request("good", nil)
	h.completes("good", 60*time.Second)
	withUser := strings.Replace(h.sourceBase, "http://", "http://sync-user:"+urlPassword+"@", 1) + "/fhir"
	h.request("userinfo", map[string]any{"exportUrl": withUser})
	h.request("userinfo-elsewhere", map[string]any{"exportUrl": "https://sync-user:" + urlPassword + "@elsewhere.example/fhir"})
	h.waitOutcome("userinfo", 60*time.Second)
	h.waitOutcome("userinfo-elsewhere", 60*time.Second)
	h.waitSettled(60 * time.Second)
	status, err := exec.CommandContext(h.ctx, h.bins.sync, "--config", h.replicas[0].configPth, "status", "--json").CombinedOutput()
	h.expect(err == nil, "pathling-sync status: %v\n%s", err, status)
	h.saveOutput("status.out", status)
	for _, r := range h.replicas {
		req, _ := http.NewRequestWithContext(h.ctx, http.MethodGet, r.admin+"/metrics", nil)
		resp, err := h.http.Do(req)
		if err != nil {
			h.t.Fatal(err)
		}
		metrics, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			h.t.Fatal(err)
		}
		h.saveOutput(r.id+"-metrics.out", metrics)
	}
	h.finalSync()
}

// saveOutput keeps a command's output for the secret scan.
func (h *harness) saveOutput(name string, out []byte) {
	h.t.Helper()
	path := filepath.Join(h.dir, name)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.extraScan = append(h.extraScan, path)
	h.mu.Unlock()
}

// finalRefusal reports whether an outcome is a refusal of bad input (not, say, a conflict with
// another request that happened to run).
func finalRefusal(e event) bool {
	var body struct {
		Reason messages.Reason `json:"reason"`
	}
	_ = json.Unmarshal(e.data, &body)
	switch body.Reason {
	case messages.ReasonInvalidRequest, messages.ReasonUnknownTarget, messages.ReasonExportURLNotAllowed:
		return true
	}
	return false
}

// retryable reports whether an outcome is a SyncFailed the requester may retry.
func retryable(e event) bool {
	var body struct {
		Retryable bool `json:"retryable"`
	}
	_ = json.Unmarshal(e.data, &body)
	return e.kind == messages.KindFailed && body.Retryable
}

// completes waits for request id's outcome and expects a SyncCompleted.
func (h *harness) completes(id string, within time.Duration) {
	h.t.Helper()
	ev := h.waitOutcome(id, within)
	h.expect(ev.kind == messages.KindCompleted, "%s: %s", id, ev)
}

// settledWithOneJob waits until nothing is left running, expects that the
// scenario's single request made exactly one Pathling job, and ends with the
// final incremental sync and data comparison.
func (h *harness) settledWithOneJob() {
	h.t.Helper()
	h.waitSettled(60 * time.Second)
	h.expect(h.mustJobsCreated() == 1, "%d Pathling jobs for one request", h.mustJobsCreated())
	h.finalSync()
}
