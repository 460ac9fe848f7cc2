package handlers_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pathling-sync/pathling-sync/clients/auth"
	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/observability"
)

// Requests whose export URLs carry credentials (userinfo, a query), refused
// or not, and runs against a Pathling reached with a static bearer token:
// no published event, log line or span holds any of those secrets.
func TestNoSecretInEventsLogsOrSpans(t *testing.T) {
	const secret = "s3cret" // in every credential below
	e := newEnv(t, envOptions{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	hc := &http.Client{Transport: observability.NewTransport(nil, observability.TransportConfig{
		Target: "t1", TracerProvider: tp, ResendCount: pathling.ResendCount,
	})}
	c, err := pathling.New(e.emuURL, pathling.WithHTTPClient(hc), pathling.WithTokenSource(auth.Static("bearer-"+secret+"-token")))
	if err != nil {
		t.Fatal(err)
	}
	// t1 normalizes export URLs as configured targets do; t2's Pathling
	// takes them as given (credentials included, so the allowlist refuses
	// them): secrets stay out of what it shows either way.
	t1 := e.target(func(t *handlers.Target) { t.Pathling = pathling.NewPort(c) })
	t2 := e.target(func(t *handlers.Target) { t.Name, t.Pathling = "t2", asGiven{pathling.NewPort(c)} })
	logs := &testenv.Buffer{}
	s, err := handlers.New(handlers.Config{
		Targets: []handlers.Target{t1, t2}, Subjects: e.subjects, Logger: jsonLogger(logs), TracerProvider: tp,
	}, e.ports(e.store))
	if err != nil {
		t.Fatal(err)
	}
	e.start(e.js, s, 0)

	userinfo := []string{
		"http://user:" + secret + "-pw@source.test/fhir",
		"http://" + secret + "-user@source.test/fhir/$export",
	}
	bad := map[string]string{} // request id -> the export URL it named
	for i, u := range append(userinfo, "http://source.test/fhir?_token="+secret+"-q") {
		bad[fmt.Sprintf("t1-%d", i)] = u
	}
	for i, u := range userinfo {
		bad[fmt.Sprintf("t2-%d", i)] = u
	}
	for id, u := range bad {
		e.request(id[:2], id, req{"exportUrl": u})
	}
	e.request("t1", "t1-ok", req{})
	e.request("t2", "t2-ok", req{})

	for id := range bad {
		f := e.outcomes.of(t, id, waitLong).failedBody(t)
		if f.Reason != messages.ReasonInvalidRequest && f.Reason != messages.ReasonExportURLNotAllowed {
			t.Errorf("%s: reason %s", id, f.Reason)
		}
		if f.ExportURL != messages.RedactURL(bad[id]) {
			t.Errorf("%s: exportUrl %q, want %q", id, f.ExportURL, messages.RedactURL(bad[id]))
		}
	}
	for _, id := range []string{"t1-ok", "t2-ok"} {
		e.outcomes.of(t, id, waitLong).completedBody(t)
	}

	for _, o := range e.outcomes.snapshot() {
		if strings.Contains(o.Subject+string(o.Body), secret) {
			t.Errorf("event %s holds a secret: %s", o.Subject, o.Body)
		}
		for k, vs := range o.Header {
			for _, v := range vs {
				if strings.Contains(v, secret) {
					t.Errorf("event %s: header %s holds a secret: %s", o.Subject, k, v)
				}
			}
		}
	}
	testenv.Eventually(t, waitLong, func() bool { return strings.Contains(logs.String(), `"run finished"`) }, "runs logged")
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, secret) || strings.Contains(line, "Bearer ") {
			t.Errorf("log line holds a secret: %s", line)
		}
	}
	for _, sp := range rec.Ended() {
		var b strings.Builder
		fmt.Fprint(&b, sp.Name(), sp.Status().Description)
		for _, kv := range sp.Attributes() {
			fmt.Fprint(&b, kv.Key, kv.Value.String())
		}
		for _, ev := range sp.Events() {
			fmt.Fprint(&b, ev.Name)
			for _, kv := range ev.Attributes {
				fmt.Fprint(&b, kv.Key, kv.Value.String())
			}
		}
		if strings.Contains(b.String(), secret) {
			t.Errorf("span %q holds a secret: %s", sp.Name(), b.String())
		}
	}
}

// asGiven is a Pathling that takes every export URL as given.
type asGiven struct{ handlers.Pathling }

func (asGiven) NormalizeExportURL(raw string) (string, error) { return raw, nil }
