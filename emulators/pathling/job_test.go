package pathling

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// newFakeClock returns a settable test clock.
func newFakeClock() *testenv.Clock {
	return testenv.NewClock(time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC))
}

func intp(n int) *int { return &n }

func jobID(loc string) string { return loc[strings.Index(loc, "id=")+3:] }

func TestSameRequestSameJob(t *testing.T) {
	h := scriptedHarness(t, Config{})
	if err := h.emu.SetDefaultScript(Script{Polls: 100}); err != nil {
		t.Fatal(err)
	}
	b := body(urlParam(srcURL), codeParam("saveMode", "merge"), strParam("_type", "Patient"))
	loc1 := h.mustKickOff(t, kickOffHeaders(), b)
	loc2 := h.mustKickOff(t, kickOffHeaders(), b)
	if loc1 != loc2 {
		t.Fatalf("identical kick-offs got different jobs: %s, %s", loc1, loc2)
	}

	// Any difference in the salient parts makes a new job.
	variants := map[string]func() (http.Header, []byte){
		"other parameter": func() (http.Header, []byte) {
			return kickOffHeaders(), body(urlParam(srcURL), codeParam("saveMode", "merge"), strParam("_type", "Observation"))
		},
		"other Authorization": func() (http.Header, []byte) {
			hdr := kickOffHeaders()
			hdr.Set("Authorization", "Bearer refreshed")
			return hdr, b
		},
		"other Prefer": func() (http.Header, []byte) {
			hdr := kickOffHeaders()
			hdr.Set("Prefer", "respond-async, handling=lenient")
			return hdr, b
		},
	}
	seen := map[string]bool{loc1: true}
	for name, v := range variants {
		hdr, bb := v()
		loc := h.mustKickOff(t, hdr, bb)
		if seen[loc] {
			t.Errorf("%s: reused job %s", name, loc)
		}
		seen[loc] = true
	}
	// A different Accept is not part of the key (Pathling keys on Prefer and Authorization).
	hdr := kickOffHeaders()
	hdr.Set("Accept", "*/*")
	if loc := h.mustKickOff(t, hdr, b); loc != loc1 {
		t.Errorf("different Accept made a new job")
	}

	c := h.emu.Counters()
	if c.JobsCreated != 4 || c.Accepted != 6 {
		t.Fatalf("counters: %+v", c)
	}
	var firstReq RequestCounters
	for _, rc := range c.Requests {
		for _, id := range rc.JobIDs {
			if id == jobID(loc1) {
				firstReq = rc
			}
		}
	}
	if firstReq.KickOffs != 3 || len(firstReq.JobIDs) != 1 || firstReq.ExportURL != srcURL {
		t.Fatalf("per-request counters for the first request: %+v", firstReq)
	}

	// After DELETE, the identical request makes a new job.
	if r := do(t, http.MethodDelete, loc1, nil, nil); r.status != http.StatusAccepted {
		t.Fatalf("delete: %s", r)
	}
	if loc := h.mustKickOff(t, kickOffHeaders(), b); loc == loc1 {
		t.Fatal("deleted job was returned again")
	}
}

// Pathling caches failures: the identical request gets the failed job back until it is deleted.
func TestStickyFailure(t *testing.T) {
	h := scriptedHarness(t, Config{})
	cause := "Async Http resonse error: [statusCode: 500]"
	if err := h.emu.Script(Script{ExportURL: srcURL, Outcome: OutcomeFail, Failure: cause}); err != nil {
		t.Fatal(err)
	}
	b := body(urlParam(srcURL))
	loc := h.mustKickOff(t, kickOffHeaders(), b)
	wantError(t, poll(t, loc, nil), 400, "Ping and pull import failed: "+cause)
	// Fetched again and again, unchanged.
	wantError(t, poll(t, loc, nil), 400, "Ping and pull import failed: "+cause)

	if again := h.mustKickOff(t, kickOffHeaders(), b); again != loc {
		t.Fatalf("retry of a failed import got a new job %s (want the failed %s)", again, loc)
	}
	wantError(t, poll(t, loc, nil), 400, "Ping and pull import failed: "+cause)

	if r := do(t, http.MethodDelete, loc, nil, nil); r.status != http.StatusAccepted {
		t.Fatalf("delete: %s", r)
	}
	fresh := h.mustKickOff(t, kickOffHeaders(), b)
	if fresh == loc {
		t.Fatal("DELETE did not forget the failed job")
	}
}

// A finished import changes the database version, so the identical request then makes a new
// job; an import that wrote nothing does not.
func TestDatabaseVersionInJobKey(t *testing.T) {
	h := scriptedHarness(t, Config{})
	b := body(urlParam(srcURL))
	loc := h.mustKickOff(t, kickOffHeaders(), b)
	if again := h.mustKickOff(t, kickOffHeaders(), b); again != loc {
		t.Fatal("running job not reused")
	}
	if r := poll(t, loc, nil); r.status != http.StatusOK {
		t.Fatalf("want done, got %s", r)
	}
	if again := h.mustKickOff(t, kickOffHeaders(), b); again == loc {
		t.Fatal("after a successful import the database version changed: want a new job")
	}

	if err := h.emu.SetDefaultScript(Script{Outputs: intp(0)}); err != nil {
		t.Fatal(err)
	}
	b2 := body(urlParam(srcURL), codeParam("saveMode", "ignore"))
	loc2 := h.mustKickOff(t, kickOffHeaders(), b2)
	if r := poll(t, loc2, nil); r.status != http.StatusOK {
		t.Fatalf("want done, got %s", r)
	}
	if again := h.mustKickOff(t, kickOffHeaders(), b2); again != loc2 {
		t.Fatal("an import that wrote nothing must leave the key unchanged: want the same job")
	}
}

func TestJobLifecycleScripted(t *testing.T) {
	clock := newFakeClock()
	h := scriptedHarness(t, Config{Clock: clock.Now})
	if err := h.emu.SetDefaultScript(Script{Polls: 4, ExportPolls: 2, Progress: []int{40, 100}, Outputs: intp(2),
		Types: []string{"Patient", "Observation"}}); err != nil {
		t.Fatal(err)
	}
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	id := jobID(loc)

	wantRunning := func(progress string) {
		t.Helper()
		r := poll(t, loc, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("want 202, got %s", r)
		}
		if got := r.header.Get("X-Progress"); got != progress {
			t.Fatalf("X-Progress = %q, want %q", got, progress)
		}
		if r.header.Get("Retry-After") != "" {
			t.Fatal("Pathling never sends Retry-After on $job")
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-cache" {
			t.Fatalf("Cache-Control = %q", cc)
		}
		want := `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job currently processing"}]}`
		if string(r.body) != want {
			t.Fatalf("running body %s", r.body)
		}
	}
	wantRunning("")    // export phase
	wantRunning("")    // export phase
	wantRunning("40%") // import phase
	wantRunning("40%") // 100% is never shown: the last value repeats

	clock.Advance(1500 * time.Millisecond)
	r := poll(t, loc, nil)
	if r.status != http.StatusOK {
		t.Fatalf("want 200, got %s", r)
	}
	if cc := r.header.Get("Cache-Control"); cc != "max-age=1" {
		t.Fatalf("Cache-Control = %q", cc)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeFHIRJSON {
		t.Fatalf("Content-Type = %q", ct)
	}
	staged := "file:///usr/share/warehouse/default/staging/pnp/pathling-pnp-import-" + id + "/export-output/"
	want := `{"resourceType":"Parameters","parameter":[` +
		`{"name":"transactionTime","valueString":"2026-03-04T05:06:09.391+00:00"},` +
		`{"name":"request","valueString":"` + h.srv.URL + `/fhir/$import-pnp"},` +
		`{"name":"output","part":[{"name":"inputUrl","valueUrl":"` + staged + `Patient.0000.ndjson"}]},` +
		`{"name":"output","part":[{"name":"inputUrl","valueUrl":"` + staged + `Observation.0000.ndjson"}]}]}`
	if string(r.body) != want {
		t.Fatalf("result\n got: %s\nwant: %s", r.body, want)
	}
	// Unchanged on every fetch, even later.
	clock.Advance(time.Hour)
	if again := poll(t, loc, nil); string(again.body) != want {
		t.Fatalf("result changed: %s", again.body)
	}
	if c := h.emu.Counters().Jobs[id]; c.Polls != 6 {
		t.Fatalf("poll counter %+v", c)
	}
}

func TestPlainJSONResult(t *testing.T) {
	h := scriptedHarness(t, Config{})
	for _, tc := range []struct {
		outputs int
		accept  []string
		check   func(t *testing.T, out any)
	}{
		{outputs: 1, accept: []string{"application/json"}, check: func(t *testing.T, out any) {
			if _, ok := out.(map[string]any); !ok {
				t.Fatalf("one output must be an object, got %T", out)
			}
		}},
		{outputs: 2, accept: nil, check: func(t *testing.T, out any) {
			if list, ok := out.([]any); !ok || len(list) != 2 {
				t.Fatalf("two outputs must be an array of 2, got %#v", out)
			}
		}},
		{outputs: 3, accept: []string{"*/*"}, check: func(t *testing.T, out any) {
			if list, ok := out.([]any); !ok || len(list) != 3 {
				t.Fatalf("three outputs must be an array of 3, got %#v", out)
			}
		}},
	} {
		exportURL := srcURL + "/" + strings.Repeat("x", tc.outputs)
		if err := h.emu.Script(Script{ExportURL: exportURL, Outputs: intp(tc.outputs)}); err != nil {
			t.Fatal(err)
		}
		loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(exportURL)))
		hdr := http.Header{}
		if tc.accept != nil {
			hdr["Accept"] = tc.accept
		}
		r := poll(t, loc, hdr)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("outputs=%d: %s %v", tc.outputs, r, r.header)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(r.body), `{"transactionTime":"`) || len(m) != 3 || m["request"] == nil {
			t.Fatalf("plain body %s", r.body)
		}
		var out any
		_ = json.Unmarshal(m["output"], &out)
		tc.check(t, out)
	}
}

func TestJobNotFound(t *testing.T) {
	h := scriptedHarness(t, Config{})
	if err := h.emu.SetDefaultScript(Script{Polls: 10}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "nope", "6F9619FF-8B86-4011-B42D-00C04FC964FF", "6f9619ff-8b86-4011-b42d-00c04fc964ff"} {
		wantError(t, poll(t, h.base()+"/$job?id="+id, nil), 404, "Job ID not found")
		wantError(t, do(t, http.MethodDelete, h.base()+"/$job?id="+id, nil, nil), 404, "Job ID not found")
	}

	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	r := do(t, http.MethodDelete, loc, nil, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("delete: %s", r)
	}
	want := `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"The job and its resources will be deleted."}]}`
	if string(r.body) != want {
		t.Fatalf("delete body %s", r.body)
	}
	wantError(t, poll(t, loc, nil), 404, "Job ID not found")
	wantError(t, do(t, http.MethodDelete, loc, nil, nil), 404, "Job ID not found")

	// Restart forgets every job.
	loc = h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	if r := poll(t, loc, nil); r.status != http.StatusAccepted {
		t.Fatalf("want running, got %s", r)
	}
	h.emu.Restart()
	wantError(t, poll(t, loc, nil), 404, "Job ID not found")
	if c := h.emu.Counters(); c.Restarts != 1 || c.Jobs[jobID(loc)].Polls != 2 {
		t.Fatalf("counters after restart: %+v", c)
	}
	// And a new kick-off after the restart is a new job.
	if again := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL))); again == loc {
		t.Fatal("restart must forget the request mapping too")
	}
}

func TestDurationScript(t *testing.T) {
	clock := newFakeClock()
	h := scriptedHarness(t, Config{Clock: clock.Now})
	if err := h.emu.SetDefaultScript(Script{Duration: 10 * time.Second, ImportAfter: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	start := clock.Now()
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	for _, step := range []struct {
		at       time.Duration
		status   int
		progress string
	}{
		{0, 202, ""}, {4 * time.Second, 202, ""}, {6 * time.Second, 202, "20%"}, {9 * time.Second, 202, "80%"}, {12 * time.Second, 200, ""},
	} {
		clock.Advance(start.Add(step.at).Sub(clock.Now()))
		r := poll(t, loc, nil)
		if r.status != step.status || r.header.Get("X-Progress") != step.progress {
			t.Fatalf("at %s: got %d X-Progress=%q, want %d %q", step.at, r.status, r.header.Get("X-Progress"), step.status, step.progress)
		}
		if step.status == 200 {
			// transactionTime is when the job finished (kick-off + duration), not when polled.
			if !strings.Contains(string(r.body), formatTransactionTime(start.Add(10*time.Second))) {
				t.Fatalf("transactionTime: %s", r.body)
			}
		}
	}
}

func TestInjections(t *testing.T) {
	h := scriptedHarness(t, Config{})
	if err := h.emu.SetDefaultScript(Script{Polls: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.emu.Inject(Injection{Target: TargetKickOff, Status: 503, RetryAfter: "2"}); err != nil {
		t.Fatal(err)
	}
	r := h.kickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	if r.status != 503 || r.header.Get("Retry-After") != "2" || r.header.Get("Content-Location") != "" {
		t.Fatalf("injected kick-off: %s %v", r, r.header)
	}
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	if err := h.emu.Inject(Injection{Target: TargetPoll, Status: 429, Count: 2, RetryAfter: "1"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r := poll(t, loc, nil); r.status != 429 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("injected poll %d: %s", i, r)
		}
	}
	// Injected polls do not advance the scripted job: it still needs its one 202 poll.
	if r := poll(t, loc, nil); r.status != 202 {
		t.Fatalf("want 202, got %s", r)
	}
	if r := poll(t, loc, nil); r.status != 200 {
		t.Fatalf("want 200, got %s", r)
	}
	c := h.emu.Counters()
	if c.InjectedKickOffs != 1 || c.JobsCreated != 1 || c.Jobs[jobID(loc)].InjectedPolls != 2 || c.Jobs[jobID(loc)].Polls != 2 {
		t.Fatalf("counters %+v", c)
	}
	if len(h.emu.PendingInjections()) != 0 {
		t.Fatal("injections not consumed")
	}
	if err := h.emu.Inject(Injection{Target: "nope", Status: 500}); err == nil {
		t.Fatal("bad target accepted")
	}
}

func TestMetadataAndUnknownOperation(t *testing.T) {
	h := scriptedHarness(t, Config{})
	r := do(t, http.MethodGet, h.base()+"/metadata", nil, nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"resourceType":"CapabilityStatement"`) ||
		!strings.Contains(string(r.body), `{"name":"import-pnp","definition":"https://pathling.csiro.au/fhir/OperationDefinition/import-pnp"}`) {
		t.Fatalf("metadata: %s", r)
	}
	r = do(t, http.MethodPost, h.base()+"/$import", kickOffHeaders(), body())
	if r.status != 400 {
		t.Fatalf("unknown operation: %s", r)
	}
	r = do(t, http.MethodGet, h.base()+"/$import-pnp", nil, nil)
	if r.status != 405 {
		t.Fatalf("GET $import-pnp: %s", r)
	}
}
