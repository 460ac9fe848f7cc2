package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

const waitLong = 30 * time.Second

type req = map[string]any

// 1. A full sync, ten changes at the source, then since "auto": Pathling's
// store equals the source's, type by type.
func TestFullThenIncrementalSync(t *testing.T) {
	e := newEnv(t, envOptions{pull: true, patients: 6})
	e.start(e.js, e.syncer(syncerOptions{}), 0)

	e.request("t1", "full-1", req{"since": "auto"})
	full := e.outcomes.of(t, "full-1", waitLong).completedBody(t)
	if full.Since != "" || full.Empty || full.Outputs == 0 {
		t.Fatalf("full sync: since=%q empty=%v outputs=%d", full.Since, full.Empty, full.Outputs)
	}
	sameResources(t, e)

	// Ten changes: updates, creations and one per type.
	for i, typ := range []string{"Patient", "Patient", "Observation", "Observation", "Observation", "Encounter", "Condition"} {
		id := firstID(t, e, typ, i)
		setField(t, e, typ, id, "pathlingSyncTest", fmt.Sprint(i))
	}
	for i := 0; i < 3; i++ {
		if err := e.src.Put(json.RawMessage(fmt.Sprintf(`{"resourceType":"Patient","id":"new-%d","gender":"other"}`, i))); err != nil {
			t.Fatal(err)
		}
	}

	e.request("t1", "incr-1", req{"since": "auto"})
	incr := e.outcomes.of(t, "incr-1", waitLong).completedBody(t)
	if incr.Since != full.Watermark {
		t.Fatalf("incremental since = %q, want the full sync's watermark %q", incr.Since, full.Watermark)
	}
	if incr.Empty {
		t.Fatal("incremental sync saw no changes")
	}
	sameResources(t, e)
	if c := e.emu.Counters(); c.JobsCreated != 2 {
		t.Fatalf("want 2 jobs (full, incremental), got %d", c.JobsCreated)
	}
}

func firstID(t *testing.T, e *env, typ string, skip int) string {
	t.Helper()
	ids := make([]string, 0)
	for id := range e.src.Resources(typ) {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		t.Fatalf("no %s at the source", typ)
	}
	// Deterministic pick.
	sortStrings(ids)
	return ids[skip%len(ids)]
}

func setField(t *testing.T, e *env, typ, id, key, value string) {
	t.Helper()
	raw, ok := e.src.Get(typ, id)
	if !ok {
		t.Fatalf("%s/%s not at the source", typ, id)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["language"] = key + "-" + value
	b, _ := json.Marshal(m)
	if err := e.src.Put(b); err != nil {
		t.Fatal(err)
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// 2. Fifty concurrent requests for one target with forbid: one import, 49
// conflicts naming the running request.
func TestConcurrentForbid(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 40}); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	for i := 0; i < 50; i++ {
		e.request("t1", fmt.Sprintf("r-%02d", i), req{})
	}
	all := e.outcomes.wait(t, 50, waitLong)
	var completed []messages.SyncCompleted
	conflicts := 0
	for _, o := range all {
		if !o.failed() {
			completed = append(completed, o.completedBody(t))
			continue
		}
		f := o.failedBody(t)
		if f.Reason != messages.ReasonConflict || !f.Retryable {
			t.Fatalf("unexpected failure %s", o.Body)
		}
		conflicts++
	}
	if len(completed) != 1 || conflicts != 49 {
		t.Fatalf("completed %d, conflicts %d; want 1 and 49", len(completed), conflicts)
	}
	for _, o := range all {
		if o.failed() && o.failedBody(t).RunningRequestID != completed[0].RequestID {
			t.Fatalf("conflict names %q, running was %q", o.failedBody(t).RunningRequestID, completed[0].RequestID)
		}
	}
	if c := e.emu.Counters(); c.JobsCreated != 1 || c.Accepted != 1 {
		t.Fatalf("Pathling saw %d kick-offs, %d jobs; want 1", c.Accepted, c.JobsCreated)
	}
	if got := len(e.outcomes.snapshot()); got != 50 {
		t.Fatalf("%d outcomes, want 50", got)
	}
}

// 3. Queue: five requests for one target run one after another, in arrival
// order, and all complete.
func TestQueueRunsInArrivalOrder(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 3}); err != nil {
		t.Fatal(err)
	}
	keep := e.target(func(t *handlers.Target) { t.KeepJobs = true }) // to compare job times
	e.start(e.js, e.syncer(syncerOptions{}, keep), 0)
	for i := 0; i < 5; i++ {
		// Different types make different Pathling requests (distinct jobs).
		e.request("t1", fmt.Sprintf("q-%d", i), req{"concurrency": "queue", "types": []string{fmt.Sprintf("Type%c", 'A'+i)}})
	}
	all := e.outcomes.wait(t, 5, waitLong)
	for i, o := range all {
		c := o.completedBody(t)
		if want := fmt.Sprintf("q-%d", i); c.RequestID != want {
			t.Fatalf("outcome %d is %s, want %s (arrival order)", i, c.RequestID, want)
		}
	}
	jobs := e.emu.Jobs()
	if len(jobs) != 5 {
		t.Fatalf("%d jobs, want 5", len(jobs))
	}
	for i := 1; i < len(jobs); i++ {
		if jobs[i].Created.Before(jobs[i-1].Finished) {
			t.Fatalf("job %d started at %s before job %d finished at %s", i, jobs[i].Created, i-1, jobs[i-1].Finished)
		}
	}
}

// 4. The same request published three times (same Nats-Msg-Id): one import,
// one outcome.
func TestDuplicatePublishOneImport(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	for i := 0; i < 3; i++ {
		e.request("t1", "dup-1", req{})
	}
	e.outcomes.of(t, "dup-1", waitLong).completedBody(t)
	e.request("t1", "after", req{}) // a later request proves the queue drained
	e.outcomes.of(t, "after", waitLong)
	if c := e.emu.Counters(); c.JobsCreated != 2 {
		t.Fatalf("jobs created %d, want 2 (dup-1 once, after once)", c.JobsCreated)
	}
	n := 0
	for _, o := range e.outcomes.snapshot() {
		if strings.HasPrefix(o.Header.Get(messages.HeaderID), "dup-1/") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d outcomes for dup-1, want 1", n)
	}
}

// 5. The consuming instance dies mid-poll without acking; a second instance
// gets the redelivery and adopts the job: one kick-off, one SyncCompleted.
func TestCrashedInstanceRunIsAdopted(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 30}); err != nil {
		t.Fatal(err)
	}
	polled := make(chan struct{}, 100)
	obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == "polled" {
			select {
			case polled <- struct{}{}:
			default:
			}
		}
	})
	// Instance 1 has its own connection, which we cut: it can neither ack nor nak.
	nc1 := connect(t, e.natsURL)
	js1, _ := jetstream.New(nc1)
	in1 := e.start(js1, e.syncer(syncerOptions{observer: obs, driver: "one"}), time.Second)
	e.request("t1", "crash-1", req{})
	for i := 0; i < 3; i++ {
		select {
		case <-polled:
		case <-time.After(waitLong):
			t.Fatal("instance 1 never polled")
		}
	}
	nc1.Close()
	in1.stop()

	var adopted sync.WaitGroup
	adopted.Add(1)
	var once sync.Once
	obs2 := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == "adopted" {
			once.Do(adopted.Done)
		}
	})
	e.start(e.js, e.syncer(syncerOptions{observer: obs2, driver: "two"}), time.Second)
	c := e.outcomes.of(t, "crash-1", waitLong).completedBody(t)
	adopted.Wait()
	if got := e.emu.Counters(); got.Accepted != 1 || got.JobsCreated != 1 {
		t.Fatalf("kick-offs %d, jobs %d; want exactly one", got.Accepted, got.JobsCreated)
	}
	if c.Attempts != 1 {
		t.Fatalf("attempts %d, want 1", c.Attempts)
	}
	e.request("t1", "next", req{})
	e.outcomes.of(t, "next", waitLong)
	n := 0
	for _, o := range e.outcomes.snapshot() {
		if strings.HasPrefix(o.Header.Get(messages.HeaderID), "crash-1/") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d outcomes for crash-1, want 1", n)
	}
}

// 6. A paused driver whose lock expired and was taken over wakes up: its
// writes are refused, it publishes nothing, the watermark never moves back.
func TestPausedDriverIsFenced(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1}); err != nil {
		t.Fatal(err)
	}
	base := e.target()
	gate := newGate(base.Pathling)
	paused := e.target(func(t *handlers.Target) { t.Pathling = gate })
	ttl := 300 * time.Millisecond
	sA := e.syncer(syncerOptions{lockTTL: ttl, driver: "A"}, paused)
	sB := e.syncer(syncerOptions{lockTTL: ttl, driver: "B"}, base)

	ctx := context.Background()
	resA := make(chan handlers.Disposition, 1)
	go func() { resA <- sA.Handle(ctx, e.delivery("t1", "old", req{}, 1)) }()
	select {
	case <-gate.entered:
	case <-time.After(waitLong):
		t.Fatal("driver A never polled")
	}
	// A is frozen inside a poll; its lock expires.
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, held, err := e.store.Lock(ctx, "t1")
		return err == nil && !held
	}, "A's lock to expire")

	// A later request takes the target and completes.
	if d := sB.Handle(ctx, e.delivery("t1", "new", req{}, 2)); d.Action != handlers.Ack {
		t.Fatalf("B: %v", d.Action)
	}
	newer := e.outcomes.of(t, "new", waitLong).completedBody(t)
	key := handlers.WatermarkKey(handlers.ImportParams{ExportURL: e.exportURL()})
	wmB, ok, err := e.store.Watermark(ctx, "t1", key)
	if err != nil || !ok {
		t.Fatalf("watermark after B: %v %v", ok, err)
	}

	// A third request holds the target when A wakes. (Were the lock free, A
	// would take it again for its own run, whose record no one else wrote:
	// see TestReacquireRefusesRunDrivenByAnother in clients/redisstore.)
	if _, err := e.store.Acquire(ctx, handlers.AcquireRequest{Target: "t1", RequestID: "third", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	close(gate.release) // A wakes up.
	select {
	case d := <-resA:
		if d.Action != handlers.Leave {
			t.Fatalf("A's disposition %v, want leave", d.Action)
		}
	case <-time.After(waitLong):
		t.Fatal("A never returned")
	}
	if n := e.pub.count(messages.CompletedID("old")) + e.pub.count(messages.FailedID("old")); n != 0 {
		t.Fatalf("fenced driver published %d outcomes", n)
	}
	wm, _, _ := e.store.Watermark(ctx, "t1", key)
	if !wm.Equal(wmB) {
		t.Fatalf("watermark moved from %s to %s", wmB, wm)
	}
	if newer.Watermark == "" {
		t.Fatal("B's outcome has no watermark")
	}
	run, err := e.store.LoadRun(ctx, "t1", "old")
	if err != nil {
		t.Fatal(err)
	}
	if run.State.Terminal() {
		t.Fatalf("fenced driver's run became %s", run.State)
	}
}

// 7. Pathling restarts mid-job (forgets its jobs): the run kicks off again
// with the same parameters and completes.
func TestPathlingRestartRekicks(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 4}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == "polled" && ev.Status.State == handlers.JobRunning {
			once.Do(e.emu.Restart)
		}
	})
	e.start(e.js, e.syncer(syncerOptions{observer: obs}), 0)
	e.request("t1", "restart-1", req{"types": []string{"Patient"}, "saveMode": "overwrite"})
	c := e.outcomes.of(t, "restart-1", waitLong).completedBody(t)
	if c.Attempts != 2 {
		t.Fatalf("attempts %d, want 2", c.Attempts)
	}
	counters := e.emu.Counters()
	if counters.JobsCreated != 2 || len(counters.Requests) != 1 {
		t.Fatalf("jobs %d, distinct requests %d; want 2 jobs of 1 identical request", counters.JobsCreated, len(counters.Requests))
	}
	for _, r := range counters.Requests {
		if r.KickOffs != 2 || r.SaveMode != "overwrite" {
			t.Fatalf("request counters %+v", r)
		}
	}
}

// 8. A job that failed with a retryable error is deleted before the retry,
// so the retry is a new job (Pathling would hand back the cached failure).
func TestFailedJobDeletedBeforeRetry(t *testing.T) {
	e := newEnv(t, envOptions{})
	failing := pathlingemu.Script{Polls: 1, Outcome: pathlingemu.OutcomeFail,
		Failure: `Async Http resonse error: [statusCode: 503, operationOutcome: null]`}
	if err := e.emu.SetDefaultScript(failing); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	obs := observerFunc(func(_ context.Context, ev handlers.RunEvent) {
		if ev.Kind == "polled" && ev.Status.State == handlers.JobFailed {
			once.Do(func() { _ = e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1}) })
		}
	})
	e.start(e.js, e.syncer(syncerOptions{observer: obs}), 0)
	e.request("t1", "retry-1", req{})
	c := e.outcomes.of(t, "retry-1", waitLong).completedBody(t)
	if c.Attempts != 2 {
		t.Fatalf("attempts %d, want 2", c.Attempts)
	}
	counters := e.emu.Counters()
	if counters.JobsCreated != 2 {
		t.Fatalf("jobs created %d, want 2 (the retry must be a new job)", counters.JobsCreated)
	}
	var ids []string
	for _, r := range counters.Requests {
		ids = r.JobIDs
	}
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("job ids %v", ids)
	}
	for _, id := range ids {
		if counters.Jobs[id].Deletes != 1 {
			t.Fatalf("job %s deleted %d times, want 1", id, counters.Jobs[id].Deletes)
		}
	}
}

// 9. An incremental export with no changes: SyncCompleted empty, watermark advanced.
func TestEmptyIncrementalCompletes(t *testing.T) {
	e := newEnv(t, envOptions{pull: true})
	// No overlap: the full sync's watermark lies after every seeded change,
	// so the since "auto" sync after it finds nothing new.
	e.start(e.js, e.syncer(syncerOptions{}, e.target(func(t *handlers.Target) { t.Overlap = 0 })), 0)
	e.request("t1", "full", req{"since": "auto"})
	full := e.outcomes.of(t, "full", waitLong).completedBody(t)
	e.request("t1", "empty", req{"since": "auto"})
	empty := e.outcomes.of(t, "empty", waitLong).completedBody(t)
	if !empty.Empty || empty.Outputs != 0 || empty.Since != full.Watermark {
		t.Fatalf("empty=%v outputs=%d since=%s (want the full sync's watermark %s)", empty.Empty, empty.Outputs, empty.Since, full.Watermark)
	}
	// The same export URL and types: the watermark moved forward.
	fw, _ := time.Parse(time.RFC3339Nano, full.Watermark)
	ew, _ := time.Parse(time.RFC3339Nano, empty.Watermark)
	if !ew.After(fw) {
		t.Fatalf("watermark %s did not advance past %s", empty.Watermark, full.Watermark)
	}
	e.request("t1", "auto-empty", req{"since": "auto"})
	ae := e.outcomes.of(t, "auto-empty", waitLong).completedBody(t)
	if !ae.Empty || ae.Since != empty.Watermark {
		t.Fatalf("auto after empty: empty=%v since=%s want since %s", ae.Empty, ae.Since, empty.Watermark)
	}
}

// 10. Timeout: the job is deleted and SyncFailed says timeout.
func TestTimeoutDeletesJob(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 100000}); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "slow", req{"timeout": "500ms"})
	f := e.outcomes.of(t, "slow", waitLong).failedBody(t)
	if f.Reason != messages.ReasonTimeout || !f.Retryable {
		t.Fatalf("failure %+v", f)
	}
	jobs := e.emu.Counters().Jobs
	if len(jobs) != 1 {
		t.Fatalf("%d jobs", len(jobs))
	}
	for id, j := range jobs {
		if j.Deletes != 1 {
			t.Fatalf("job %s deleted %d times, want 1", id, j.Deletes)
		}
	}
}

// 11. Bad input: a clear SyncFailed, the message terminated, and the service
// goes on with the next valid request.
func TestBadInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	big := `{"correlationId":"` + strings.Repeat("x", 1<<20-8<<10) + `"}`
	cases := []struct {
		name, target string
		body         string
		reason       messages.Reason
		contains     string
	}{
		{"malformed", "t1", `{"saveMode":`, messages.ReasonInvalidRequest, "JSON"},
		{"unknown field", "t1", `{"saveMode":"merge","mode":"x"}`, messages.ReasonInvalidRequest, `mode`},
		{"wrong type", "t1", `{"types":"Patient"}`, messages.ReasonInvalidRequest, "types"},
		{"bad instant", "t1", `{"since":"2025-13-01"}`, messages.ReasonInvalidRequest, "since"},
		{"unknown target", "nope", `{}`, messages.ReasonUnknownTarget, `"nope"`},
		{"export url not allowed", "t1", `{"exportUrl":"https://evil.example/fhir"}`, messages.ReasonExportURLNotAllowed, "evil.example"},
		{"1 MiB body", "t1", big, messages.ReasonInvalidRequest, "limit of 65536"},
		{"empty body", "t1", ``, messages.ReasonInvalidRequest, "empty"},
		{"overwrite with since", "t1", `{"saveMode":"overwrite","since":"2025-01-01T00:00:00Z"}`, messages.ReasonInvalidRequest, "overwrite"},
	}
	for i, c := range cases {
		e.request(c.target, fmt.Sprintf("bad-%d", i), c.body)
	}
	// Headers only, no envelope: id from the stream sequence.
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: e.subjects.Requested("t1"), Header: nats.Header{"X-Foo": {"bar"}}}); err != nil {
		t.Fatal(err)
	}
	e.request("t1", "good", req{})
	e.outcomes.of(t, "good", waitLong).completedBody(t)
	for i, c := range cases {
		o := e.outcomes.of(t, fmt.Sprintf("bad-%d", i), waitLong)
		f := o.failedBody(t)
		if f.Reason != c.reason || f.Retryable || !strings.Contains(f.Message, c.contains) {
			t.Errorf("%s: reason %s retryable %v message %q; want %s containing %q", c.name, f.Reason, f.Retryable, f.Message, c.reason, c.contains)
		}
	}
	headless := false
	for _, o := range e.outcomes.snapshot() {
		if strings.HasPrefix(o.Header.Get(messages.HeaderID), "PATHLING_SYNC:") && o.failed() {
			headless = true
		}
	}
	if !headless {
		t.Error("no SyncFailed for the headless empty request")
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := e.js.Consumer(context.Background(), "PATHLING_SYNC", "pathling-sync")
		if err != nil {
			return false
		}
		ci, err := info.Info(context.Background())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.NumRedelivered == 0
	}, "all messages settled, none redelivered")
	if c := e.emu.Counters(); c.JobsCreated != 1 {
		t.Fatalf("Pathling saw %d jobs, want 1 (the good request)", c.JobsCreated)
	}
}

// 12. A redelivered request whose run already finished re-publishes the same
// outcome and imports nothing.
func TestRedeliveryOfFinishedRunRepublishes(t *testing.T) {
	e := newEnv(t, envOptions{})
	s := e.syncer(syncerOptions{})
	ctx := context.Background()
	d := e.delivery("t1", "done-1", req{}, 1)
	if got := s.Handle(ctx, d); got.Action != handlers.Ack {
		t.Fatalf("first delivery: %v", got.Action)
	}
	first := e.outcomes.of(t, "done-1", waitLong)
	d.NumDelivered = 2 // the ack was lost: JetStream delivers again
	if got := s.Handle(ctx, d); got.Action != handlers.Ack {
		t.Fatalf("redelivery: %v", got.Action)
	}
	if n := e.pub.count(messages.CompletedID("done-1")); n != 2 {
		t.Fatalf("published %d times, want 2 (original + re-publish)", n)
	}
	if c := e.emu.Counters(); c.Accepted != 1 {
		t.Fatalf("kick-offs %d, want 1", c.Accepted)
	}
	run, err := e.store.LoadRun(ctx, "t1", "done-1")
	if err != nil || string(run.Outcome.Body) != string(first.Body) {
		t.Fatalf("stored outcome differs from the published one: %v", err)
	}
	if _, held, _ := e.store.Lock(ctx, "t1"); held {
		t.Fatal("lock still held after the run finished")
	}
}

// 13. The outcome carries the request's trace id.
func TestOutcomeContinuesTrace(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	env := messages.Envelope{ID: "traced", Source: "test", Type: messages.TypeRequested, Subject: "t1",
		ContentType: messages.ContentTypeJSON, Time: time.Now(),
		TraceParent: "00-" + traceID + "-00f067aa0ba902b7-01"}
	if _, err := natsbus.PublishRequest(context.Background(), e.js, e.subjects.Requested("t1"), env, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	o := e.outcomes.of(t, "traced", waitLong)
	tp := o.Header.Get("traceparent")
	if !strings.HasPrefix(tp, "00-"+traceID+"-") {
		t.Fatalf("outcome traceparent %q does not continue trace %s", tp, traceID)
	}
	if o.Header.Get(messages.HeaderID) != "traced/completed" || o.Header.Get("Nats-Msg-Id") != "traced/completed" {
		t.Fatalf("outcome ids: ce-id %q Nats-Msg-Id %q", o.Header.Get(messages.HeaderID), o.Header.Get("Nats-Msg-Id"))
	}
}

// Authentication failures at kick-off end the run as unauthorized, with no retry.
func TestRejectedKickOff(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}, e.target(func(t *handlers.Target) {
		t.AllowedExportURLs = []string{"http://other.test/fhir"}
	})), 0)
	// Allowed by us, refused by Pathling's own allowlist: 400 at kick-off.
	e.request("t1", "rej", req{"exportUrl": "http://other.test/fhir"})
	f := e.outcomes.of(t, "rej", waitLong).failedBody(t)
	if f.Reason != messages.ReasonRejected || f.Retryable || f.HTTPStatus != 400 || len(f.OperationOutcome) == 0 {
		t.Fatalf("failure %+v", f)
	}
}

// A poll answered 503 a few times is retried within the run.
func TestTransientPollErrorsRetried(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 2}); err != nil {
		t.Fatal(err)
	}
	if err := e.emu.Inject(pathlingemu.Injection{Target: pathlingemu.TargetPoll, Status: 503, Count: 3}); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "flaky", req{})
	c := e.outcomes.of(t, "flaky", waitLong).completedBody(t)
	if c.Attempts != 1 {
		t.Fatalf("attempts %d, want 1 (poll errors must not re-kick)", c.Attempts)
	}
}

// A final (non-retryable) import failure is reported with Pathling's outcome.
func TestFinalImportFailure(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.emu.SetDefaultScript(pathlingemu.Script{Polls: 1, Outcome: pathlingemu.OutcomeFail,
		Failure: "Manifest download URL origin does not match export URL origin: http://x"}); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "final", req{})
	f := e.outcomes.of(t, "final", waitLong).failedBody(t)
	if f.Reason != messages.ReasonImportFailed || f.Retryable || f.HTTPStatus != 400 || !strings.Contains(f.Message, "origin") {
		t.Fatalf("failure %+v", f)
	}
	if e.emu.Counters().JobsCreated != 1 {
		t.Fatal("a final failure must not be retried")
	}
}

// A conflict is recorded: redelivered once the target is free, the request
// re-publishes its conflict instead of running late.
func TestRedeliveredConflictDoesNotRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	s := e.syncer(syncerOptions{})
	ctx := context.Background()
	holder, err := e.store.Acquire(ctx, handlers.AcquireRequest{Target: "t1", RequestID: "holder", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	d := e.delivery("t1", "late", req{}, 1)
	if got := s.Handle(ctx, d); got.Action != handlers.Ack {
		t.Fatalf("conflict: %v", got.Action)
	}
	if f := e.outcomes.of(t, "late", waitLong).failedBody(t); f.Reason != messages.ReasonConflict || f.RunningRequestID != "holder" {
		t.Fatalf("%+v", f)
	}
	if err := e.store.Release(ctx, holder); err != nil {
		t.Fatal(err)
	}
	d.NumDelivered = 2
	if got := s.Handle(ctx, d); got.Action != handlers.Ack {
		t.Fatalf("redelivery: %v", got.Action)
	}
	if c := e.emu.Counters(); c.KickOffs != 0 {
		t.Fatalf("the refused request ran after all (%d kick-offs)", c.KickOffs)
	}
	if n := e.pub.count(messages.FailedID("late")); n != 2 {
		t.Fatalf("conflict published %d times, want 2", n)
	}
}

// A target whose default since is "auto" still runs a request for a full
// overwrite as a full export: the default must not make it partial.
func TestOverwriteIgnoresDefaultSince(t *testing.T) {
	e := newEnv(t, envOptions{pull: true})
	tgt := e.target(func(t *handlers.Target) { t.Defaults.Since = "auto" })
	e.start(e.js, e.syncer(syncerOptions{}, tgt), 0)
	e.request("t1", "incr", req{})
	if c := e.outcomes.of(t, "incr", waitLong).completedBody(t); c.Since != "" {
		t.Fatalf("first auto sync had since %q", c.Since) // no watermark yet: full
	}
	e.request("t1", "full-overwrite", req{"saveMode": "overwrite"})
	c := e.outcomes.of(t, "full-overwrite", waitLong).completedBody(t)
	if c.Since != "" || c.Empty {
		t.Fatalf("overwrite ran with since %q (empty %v), want a full export", c.Since, c.Empty)
	}
	sameResources(t, e)
}

// When the outcome is published the target is already free: a script or
// chain reacting to SyncCompleted with the next request for the same target
// must not meet a conflict.
func TestTargetFreeWhenOutcomePublished(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	var mu sync.Mutex
	heldAtPublish := map[string]bool{}
	e.pub.before = func(ev handlers.Event) {
		info, held, err := e.store.Lock(ctx, "t1")
		mu.Lock()
		heldAtPublish[ev.Envelope.ID] = err != nil || (held && info.RequestID+"/completed" == ev.Envelope.ID)
		mu.Unlock()
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "first", req{})
	e.outcomes.of(t, "first", waitLong).completedBody(t)
	e.request("t1", "second", req{})
	e.outcomes.of(t, "second", waitLong).completedBody(t)
	mu.Lock()
	defer mu.Unlock()
	if heldAtPublish["first/completed"] || heldAtPublish["second/completed"] {
		t.Fatalf("lock still held when the outcome was published: %v", heldAtPublish)
	}
}
