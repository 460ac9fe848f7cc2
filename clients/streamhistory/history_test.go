package streamhistory_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

const stream = "PATHLING_SYNC"

var subjects = messages.Subjects{}

// env is a JetStream server with the service's stream, and a History of it.
type env struct {
	t  *testing.T
	js jetstream.JetStream
	h  *streamhistory.History
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := testenv.NATS(t).Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, js, natsbus.StreamConfig{
		Name: stream, Subjects: []string{"pathling.sync.>"}, Storage: jetstream.MemoryStorage,
		MaxAge: time.Hour, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, h: streamhistory.New(js, stream, streamhistory.WithSubjects(subjects))}
}

// request publishes a SyncRequested for target with id, as the CLI does.
func (e *env) request(target, id string, req messages.SyncRequested, opts ...messages.RequestOption) uint64 {
	e.t.Helper()
	body, _ := json.Marshal(req)
	return e.pub(subjects.Requested(target), messages.NewRequestEnvelope(id, "test", target, time.Now(), opts...), body)
}

// completed and failed publish the outcome of request id, as the service does.
func (e *env) completed(target, id string) uint64 {
	e.t.Helper()
	body, _ := json.Marshal(messages.SyncCompleted{RequestID: id, Target: target, Outputs: 1})
	return e.pub(subjects.Completed(target), messages.Envelope{ID: messages.CompletedID(id), Type: messages.TypeCompleted, Subject: target}, body)
}

func (e *env) failed(target, id string, reason messages.Reason) uint64 {
	e.t.Helper()
	body, _ := json.Marshal(messages.SyncFailed{RequestID: id, Target: target, Reason: reason})
	return e.pub(subjects.Failed(target), messages.Envelope{ID: messages.FailedID(id), Type: messages.TypeFailed, Subject: target}, body)
}

func (e *env) pub(subject string, env messages.Envelope, body []byte) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 5*time.Second)
	defer cancel()
	ack, err := natsbus.PublishRequest(ctx, e.js, subject, env, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// scan returns the sequences Scan hands over.
func (e *env) scan(filters []string, r streamhistory.Range) []uint64 {
	e.t.Helper()
	var seqs []uint64
	if err := e.h.Scan(e.t.Context(), filters, r, func(ev streamhistory.Event) error {
		seqs = append(seqs, ev.Seq)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return seqs
}

func TestScanRangesAndFilters(t *testing.T) {
	e := newEnv(t)
	if got := e.scan(nil, streamhistory.Range{}); got != nil {
		t.Fatalf("empty stream: %v", got)
	}
	e.request("a", "r1", messages.SyncRequested{}) // 1
	e.completed("a", "r1")                         // 2
	e.request("b", "r2", messages.SyncRequested{}) // 3
	e.failed("b", "r2", messages.ReasonConflict)   // 4
	mid := time.Now()
	e.request("a", "r3", messages.SyncRequested{}) // 5

	for name, c := range map[string]struct {
		filters []string
		r       streamhistory.Range
		want    []uint64
	}{
		"all":                 {nil, streamhistory.Range{}, []uint64{1, 2, 3, 4, 5}},
		"seq range":           {nil, streamhistory.Range{FromSeq: 2, ToSeq: 4}, []uint64{2, 3, 4}},
		"to past the end":     {nil, streamhistory.Range{FromSeq: 4, ToSeq: 99}, []uint64{4, 5}},
		"from past the end":   {nil, streamhistory.Range{FromSeq: 6}, nil},
		"since":               {nil, streamhistory.Range{Since: mid}, []uint64{5}},
		"until":               {nil, streamhistory.Range{Until: mid}, []uint64{1, 2, 3, 4}},
		"one filter":          {[]string{subjects.Requested("*")}, streamhistory.Range{}, []uint64{1, 3, 5}},
		"outcomes of one":     {[]string{subjects.Completed("b"), subjects.Failed("b")}, streamhistory.Range{}, []uint64{4}},
		"outcomes of a, to 4": {[]string{subjects.Completed("a"), subjects.Failed("a")}, streamhistory.Range{ToSeq: 4}, []uint64{2}},
	} {
		if got := e.scan(c.filters, c.r); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", name, got, c.want)
		}
	}

	// fn's error stops the scan and comes back as it is.
	stop := errors.New("stop")
	n := 0
	err := e.h.Scan(t.Context(), nil, streamhistory.Range{}, func(streamhistory.Event) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("fn error: %v after %d events", err, n)
	}
}

func TestEventDecoding(t *testing.T) {
	e := newEnv(t)
	e.request("a", "r1", messages.SyncRequested{SaveMode: "merge"}, messages.WithReplayOf("r0"))
	e.completed("a", "r1")
	var evs []streamhistory.Event
	if err := e.h.Scan(t.Context(), nil, streamhistory.Range{}, func(ev streamhistory.Event) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("events: %+v", evs)
	}
	req, done := evs[0], evs[1]
	if req.Stream != stream || req.Seq != 1 || req.Subject != "pathling.sync.requested.a" || req.Stored.IsZero() ||
		req.Envelope().ReplayOf != "r0" || req.Time().Location() != time.UTC {
		t.Errorf("request event: %+v", req)
	}
	if id, rid := req.IDs(messages.KindRequested); id != "r1" || rid != "r1" {
		t.Errorf("request ids %q %q", id, rid)
	}
	if id, rid := done.IDs(messages.KindCompleted); id != "r1/completed" || rid != "r1" {
		t.Errorf("outcome ids %q %q", id, rid)
	}
	// No ce-time: the time the stream stored it.
	if !done.Time().Equal(done.Stored) {
		t.Errorf("outcome time %v, stored %v", done.Time(), done.Stored)
	}
}

func TestFollow(t *testing.T) {
	e := newEnv(t)
	e.request("a", "old", messages.SyncRequested{})
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- e.h.Follow(ctx, []string{subjects.Requested("a")}, time.Time{}, func(ev streamhistory.Event) error {
			id, _ := ev.IDs(messages.KindRequested)
			got <- id
			return nil
		})
	}()
	// The follower starts at new events: keep publishing until one shows.
	var first string
	n := 0
	testenv.Eventually(t, 20*time.Second, func() bool {
		n++
		e.request("b", "other", messages.SyncRequested{}) // filtered out
		e.request("a", "new-"+string(rune('0'+n%10)), messages.SyncRequested{})
		select {
		case first = <-got:
			return true
		default:
			return false
		}
	}, "no followed event")
	if first == "old" || first == "other" {
		t.Fatalf("followed %q", first)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow after cancel: %v", err)
	}

	// With since, history first.
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	got2 := make(chan string, 64)
	go func() {
		_ = e.h.Follow(ctx2, []string{subjects.Requested("a")}, time.Now().Add(-time.Hour), func(ev streamhistory.Event) error {
			id, _ := ev.IDs(messages.KindRequested)
			got2 <- id
			return nil
		})
	}()
	select {
	case id := <-got2:
		if id != "old" {
			t.Fatalf("first of history: %q", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("history not followed")
	}
}

func TestLastOutcomeAndTargets(t *testing.T) {
	e := newEnv(t)
	if _, ok, err := e.h.LastOutcome(t.Context(), "a"); ok || err != nil {
		t.Fatalf("no outcome yet: %v %v", ok, err)
	}
	e.request("a", "r1", messages.SyncRequested{})
	e.failed("a", "r1", messages.ReasonConflict)
	e.request("a", "r2", messages.SyncRequested{})
	seq := e.completed("a", "r2")
	e.request("b", "r3", messages.SyncRequested{})
	ev, ok, err := e.h.LastOutcome(t.Context(), "a")
	if err != nil || !ok || ev.Seq != seq || ev.Stream != stream {
		t.Fatalf("last outcome of a: %+v %v %v", ev, ok, err)
	}
	if _, rid := ev.IDs(messages.KindCompleted); rid != "r2" {
		t.Errorf("last outcome is of %q", rid)
	}
	targets, err := e.h.Targets(t.Context())
	slices.Sort(targets)
	if err != nil || !slices.Equal(targets, []string{"a", "b"}) {
		t.Errorf("targets %v %v", targets, err)
	}
	if last, err := e.h.LastSeq(t.Context()); err != nil || last != 5 {
		t.Errorf("last seq %d %v", last, err)
	}
}

func TestSelectReplays(t *testing.T) {
	e := newEnv(t)
	e.request("a", "ok", messages.SyncRequested{})
	e.completed("a", "ok")
	e.request("a", "conflict", messages.SyncRequested{})
	e.failed("a", "conflict", messages.ReasonConflict)
	e.request("a", "timeout", messages.SyncRequested{})
	e.failed("a", "timeout", messages.ReasonTimeout)
	e.pub(subjects.Requested("a"), messages.NewRequestEnvelope("bad", "test", "a", time.Now()), []byte(`{"saveMode":"sideways"}`))
	e.failed("a", "bad", messages.ReasonInvalidRequest)
	end := e.request("b", "b1", messages.SyncRequested{})
	// A replay of "timeout", after the range.
	e.request("a", "replay:timeout:1", messages.SyncRequested{}, messages.WithReplayOf("timeout"))

	ids := func(rs []streamhistory.Replay) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.OriginalID)
		}
		return out
	}
	all, err := e.h.SelectReplays(t.Context(), streamhistory.ReplayQuery{Range: streamhistory.Range{FromSeq: 1, ToSeq: end}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all.Replays); !slices.Equal(got, []string{"ok", "conflict", "timeout", "b1"}) || len(all.Skipped) != 1 || all.Skipped[0].Invalid == nil {
		t.Fatalf("all: %v, skipped %+v", got, all.Skipped)
	}
	if all.Replays[3].Target != "b" {
		t.Errorf("target of b1: %q", all.Replays[3].Target)
	}

	failedA, err := e.h.SelectReplays(t.Context(), streamhistory.ReplayQuery{Target: "a", Range: streamhistory.Range{FromSeq: 1, ToSeq: end}, OnlyFailed: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(failedA.Replays); !slices.Equal(got, []string{"conflict"}) || failedA.NotFailed != 1 {
		t.Fatalf("only failed: %v, not failed %d", got, failedA.NotFailed)
	}
	var replayedAs string
	for _, s := range failedA.Skipped {
		if s.OriginalID == "timeout" {
			replayedAs = s.ReplayedAs
		}
	}
	if replayedAs != "replay:timeout:1" {
		t.Errorf("timeout should be skipped as replayed: %+v", failedA.Skipped)
	}

	byReason, err := e.h.SelectReplays(t.Context(), streamhistory.ReplayQuery{Target: "a", Range: streamhistory.Range{FromSeq: 1, ToSeq: end},
		OnlyFailed: true, IncludeReplayed: true, Reasons: []messages.Reason{messages.ReasonTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(byReason.Replays); !slices.Equal(got, []string{"timeout"}) || len(byReason.Skipped) != 2 || byReason.Skipped[0].FailedWith != messages.ReasonConflict {
		t.Fatalf("by reason: %v, skipped %+v", got, byReason.Skipped)
	}
}

func TestWatchOutcome(t *testing.T) {
	e := newEnv(t)
	w, err := e.h.WatchOutcome(t.Context(), "a", "mine")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	e.completed("a", "someone-else")
	e.failed("b", "b-request", messages.ReasonConflict) // another target
	seq := e.failed("a", "mine", messages.ReasonTimeout)
	select {
	case ev := <-w.Outcome():
		if ev.Seq != seq || ev.Header.Get(messages.HeaderType) != messages.TypeFailed {
			t.Fatalf("outcome %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no outcome")
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	missing := streamhistory.New(e.js, "NO_SUCH_STREAM")
	err := missing.Scan(t.Context(), nil, streamhistory.Range{}, func(streamhistory.Event) error { return nil })
	if !errors.Is(err, streamhistory.ErrNoStream) {
		t.Fatalf("missing stream: %v", err)
	}
	e.js.Conn().Close()
	var ue *streamhistory.UnavailableError
	if _, err := e.h.LastSeq(t.Context()); !errors.As(err, &ue) {
		t.Fatalf("closed connection: %T %v", err, err)
	}
	if _, err := e.h.WatchOutcome(t.Context(), "a", "r"); !errors.As(err, &ue) {
		t.Fatalf("watch on a closed connection: %T %v", err, err)
	}
}
