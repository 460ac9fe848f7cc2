package handlers_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// A delivery whose ce-type is not SyncRequested's (say a SyncCompleted
// published on the requested subject by a misrouting bridge) is bad input:
// SyncFailed invalid_request, no import. One without any header still runs.
func TestWrongCloudEventTypeRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	ctx := context.Background()

	wrong := messages.Envelope{ID: "misrouted", Source: "bridge", Type: messages.TypeCompleted, Subject: "t1",
		ContentType: messages.ContentTypeJSON, Time: time.Now().UTC()}
	if _, err := natsbus.PublishRequest(ctx, e.js, e.subjects.Requested("t1"), wrong, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	f := e.outcomes.of(t, "misrouted", waitLong).failedBody(t)
	if f.Reason != messages.ReasonInvalidRequest || f.Retryable ||
		!strings.Contains(f.Message, messages.TypeCompleted) || !strings.Contains(f.Message, messages.TypeRequested) {
		t.Fatalf("reason %s retryable %v message %q; want invalid_request naming both types", f.Reason, f.Retryable, f.Message)
	}
	// Plain `nats pub` with only a dedup id: accepted.
	if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: e.subjects.Requested("t1"),
		Header: nats.Header{messages.HeaderNatsMsgID: {"headless"}}, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	e.outcomes.of(t, "headless", waitLong).completedBody(t)
	if c := e.emu.Counters(); c.JobsCreated != 1 {
		t.Fatalf("Pathling saw %d jobs, want 1 (the headless request)", c.JobsCreated)
	}
}

// A since in the future (beyond a minute of clock difference) is refused:
// the export would be empty, and later since "auto" syncs skip nothing
// only if nobody pretends to have imported the future.
func TestFutureSinceRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	future := messages.FormatInstant(time.Now().Add(time.Hour))
	e.request("t1", "future", req{"since": future})
	f := e.outcomes.of(t, "future", waitLong).failedBody(t)
	if f.Reason != messages.ReasonInvalidRequest || f.Retryable || !strings.Contains(f.Message, "since") || !strings.Contains(f.Message, "future") {
		t.Fatalf("reason %s retryable %v message %q; want invalid_request about since in the future", f.Reason, f.Retryable, f.Message)
	}
	// Within the clock allowance: runs.
	e.request("t1", "skewed", req{"since": messages.FormatInstant(time.Now().Add(10 * time.Second))})
	e.outcomes.of(t, "skewed", waitLong).completedBody(t)
}

// A subject with tokens after the target (pathling.sync.requested.a.b), or
// whose target is no valid name, has no outcome subject the requester
// could see without breaking the schema: the delivery is terminated, logged
// at Warn with its subject and counted (a bounded reason, never the
// subject).
func TestUnroutableSubjectLoggedAndCounted(t *testing.T) {
	e := newEnv(t, envOptions{})
	var logs testenv.Buffer
	var mu sync.Mutex
	var dropped []handlers.RunEvent
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{e.target()}, Subjects: e.subjects, LockTTL: 3 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Observer: observerFunc(func(_ context.Context, ev handlers.RunEvent) {
			mu.Lock()
			defer mu.Unlock()
			dropped = append(dropped, ev)
		}),
	}, e.ports(e.store))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ subject, reason, says string }{
		{"pathling.sync.requested.t1.extra", messages.SubjectExtraTokens, "after the target"},
		{"pathling.sync.requested.bad$name", messages.SubjectInvalidTarget, "[A-Za-z0-9_-]{1,64}"},
	}
	for i, c := range cases {
		d := e.delivery("t1", "unroutable", req{}, uint64(i+1))
		d.Subject = c.subject
		if disp := s.Handle(context.Background(), d); disp.Action != handlers.Term {
			t.Fatalf("%s: %v, want term", c.subject, disp.Action)
		}
		mu.Lock()
		last := handlers.RunEvent{}
		if len(dropped) > 0 {
			last = dropped[len(dropped)-1]
		}
		mu.Unlock()
		if last.Kind != handlers.EventDropped || last.Dropped != c.reason || last.Target != "" {
			t.Errorf("%s: last event %+v, want %s with reason %s and no target", c.subject, last, handlers.EventDropped, c.reason)
		}
		line := ""
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, c.subject) {
				line = l
			}
		}
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, `"subject":"`+c.subject+`"`) || !strings.Contains(line, c.says) {
			t.Errorf("%s: log line %q; want WARN with the subject, saying %q", c.subject, line, c.says)
		}
	}
	if n := e.pub.count(messages.FailedID("unroutable")); n != 0 {
		t.Fatalf("published %d outcomes for unroutable subjects", n)
	}
}
