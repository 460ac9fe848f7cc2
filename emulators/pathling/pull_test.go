package pathling

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/auth"
)

func TestPullEndToEnd(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{
		"Patient":     {patients("p1", "p2"), patients("p3")},
		"Observation": {observations("o1")},
	})
	gate := make(chan struct{})
	fs.configure(func(fs *fakeSource) { fs.gate = gate })
	entered := make(chan string, 1)
	release := make(chan struct{})
	h := pullHarness(t, fs, Config{ImportHook: func(ctx context.Context, id string) error {
		entered <- id
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})

	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base()), codeParam("saveMode", "merge")))
	eventually(t, 5*time.Second, func() bool { _, polls, _, _, _ := fs.counts(); return polls >= 2 }, "source not polled")
	// Export phase: running, no X-Progress.
	r := poll(t, loc, nil)
	if r.status != 202 || r.header.Get("X-Progress") != "" {
		t.Fatalf("export phase: %s X-Progress=%q", r, r.header.Get("X-Progress"))
	}

	close(gate)
	select {
	case id := <-entered:
		if id != jobID(loc) {
			t.Fatalf("hook got job %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("import phase not reached")
	}
	// Import phase: X-Progress shows, never 100%.
	r = poll(t, loc, nil)
	if r.status != 202 || r.header.Get("X-Progress") != "0%" {
		t.Fatalf("import phase: %s X-Progress=%q", r, r.header.Get("X-Progress"))
	}
	_, _, deletes, downloads, deletedReads := fs.counts()
	if deletes != 1 {
		t.Fatalf("export not deleted at the source before import: %d deletes", deletes)
	}
	if len(downloads) != 3 || deletedReads != 0 {
		t.Fatalf("downloads %v, reads of 'deleted' files %d", downloads, deletedReads)
	}
	close(release)

	r = pollUntilDone(t, loc, nil)
	if r.status != 200 {
		t.Fatalf("want 200, got %s", r)
	}
	staged := "file:///usr/share/warehouse/default/staging/pnp/pathling-pnp-import-" + jobID(loc) + "/export-output/"
	for _, name := range []string{"Observation.0000.ndjson", "Patient.0000.ndjson", "Patient.0001.ndjson"} {
		if !strings.Contains(string(r.body), `{"name":"inputUrl","valueUrl":"`+staged+name+`"}`) {
			t.Fatalf("result lacks %s: %s", name, r.body)
		}
	}
	if got := h.emu.ResourceTypes(); strings.Join(got, ",") != "Observation,Patient" {
		t.Fatalf("types %v", got)
	}
	if n := len(h.emu.Resources("Patient")); n != 3 {
		t.Fatalf("patients %d", n)
	}

	// Read back through the FHIR API.
	r = do(t, http.MethodGet, h.base()+"/Patient?_summary=count", nil, nil)
	if r.status != 200 || r.json(t)["total"].(float64) != 3 || r.json(t)["type"] != "searchset" {
		t.Fatalf("count: %s", r)
	}
	r = do(t, http.MethodGet, h.base()+"/Patient/p2", nil, nil)
	if r.status != 200 || string(r.body) != `{"resourceType":"Patient","id":"p2","name":[{"family":"Fp2"}]}` {
		t.Fatalf("read: %s", r)
	}
	wantError(t, do(t, http.MethodGet, h.base()+"/Patient/nope", nil, nil), 404, "Resource Patient/nope is not known")
	r = do(t, http.MethodGet, h.base()+"/Condition?_summary=count", nil, nil)
	if r.status != 200 || r.json(t)["total"].(float64) != 0 {
		t.Fatalf("count of an absent type: %s", r)
	}
}

// importWith replaces the source's files, imports with the save mode and returns the final poll.
func importWith(t *testing.T, h *harness, fs *fakeSource, mode string, files map[string][]string) response {
	t.Helper()
	fs.setFiles(files)
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base()), codeParam("saveMode", mode)))
	return pollUntilDone(t, loc, nil)
}

func TestSaveModes(t *testing.T) {
	fs := newFakeSource(t)
	h := pullHarness(t, fs, Config{})
	mustDone := func(r response) {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("want 200, got %s", r)
		}
	}
	family := func(id string) string {
		t.Helper()
		raw := string(h.emu.Resources("Patient")[id])
		i := strings.Index(raw, `"family":"`)
		if i < 0 {
			return ""
		}
		rest := raw[i+len(`"family":"`):]
		return rest[:strings.Index(rest, `"`)]
	}

	mustDone(importWith(t, h, fs, "merge", map[string][]string{"Patient": {patients("p1", "p2")}}))
	if h.emu.ResourceCount("Patient") != 2 {
		t.Fatal("merge into a new table")
	}

	// merge: upsert by id; types absent from the export are untouched.
	mustDone(importWith(t, h, fs, "merge", map[string][]string{"Patient": {
		`{"resourceType":"Patient","id":"p2","name":[{"family":"Updated"}]}` + "\n" + patients("p3")}}))
	if h.emu.ResourceCount("Patient") != 3 || family("p2") != "Updated" || family("p1") != "Fp1" {
		t.Fatalf("merge: %d rows, p2=%q", h.emu.ResourceCount("Patient"), family("p2"))
	}

	// append: duplicates possible.
	mustDone(importWith(t, h, fs, "append", map[string][]string{"Patient": {patients("p3", "p4")}}))
	if h.emu.ResourceCount("Patient") != 5 || len(h.emu.Resources("Patient")) != 4 {
		t.Fatalf("append: %d rows, %d ids", h.emu.ResourceCount("Patient"), len(h.emu.Resources("Patient")))
	}
	r := do(t, http.MethodGet, h.base()+"/Patient?_summary=count", nil, nil)
	if r.json(t)["total"].(float64) != 5 {
		t.Fatalf("count after append: %s", r)
	}

	// overwrite: the table of each imported type is replaced.
	mustDone(importWith(t, h, fs, "overwrite", map[string][]string{
		"Patient": {patients("p9")}, "Observation": {observations("o1")}}))
	if h.emu.ResourceCount("Patient") != 1 || family("p9") != "Fp9" || h.emu.ResourceCount("Observation") != 1 {
		t.Fatalf("overwrite: %d patients", h.emu.ResourceCount("Patient"))
	}

	// ignore: existing tables are skipped, new ones written.
	mustDone(importWith(t, h, fs, "ignore", map[string][]string{
		"Patient": {patients("p10")}, "Condition": {`{"resourceType":"Condition","id":"c1"}`}}))
	if h.emu.ResourceCount("Patient") != 1 || h.emu.ResourceCount("Condition") != 1 {
		t.Fatalf("ignore: %d patients, %d conditions", h.emu.ResourceCount("Patient"), h.emu.ResourceCount("Condition"))
	}

	// error: fails on an existing table; writes are not atomic across types.
	r = importWith(t, h, fs, "error", map[string][]string{
		"AllergyIntolerance": {`{"resourceType":"AllergyIntolerance","id":"a1"}`}, "Patient": {patients("p11")}})
	wantError(t, r, 400, "Ping and pull import failed: [DELTA_PATH_EXISTS] Cannot write to already existent path "+
		"file:/usr/share/warehouse/default/Patient.parquet without setting OVERWRITE = 'true'.")
	if h.emu.ResourceCount("AllergyIntolerance") != 1 || h.emu.ResourceCount("Patient") != 1 {
		t.Fatal("error mode: earlier types stay written, the existing table untouched")
	}
	mustDone(importWith(t, h, fs, "error", map[string][]string{"Encounter": {`{"resourceType":"Encounter","id":"e1"}`}}))
	if h.emu.ResourceCount("Encounter") != 1 {
		t.Fatal("error mode on a new table")
	}
}

func TestPullFailures(t *testing.T) {
	const boom = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"boom"}]}`
	cases := []struct {
		name        string
		setup       func(fs *fakeSource)
		body        func(fs *fakeSource) []byte
		diagnostics func(fs *fakeSource) string
		deletes     int
	}{
		{name: "empty export",
			setup: func(fs *fakeSource) {},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: No files with extension .ndjson were downloaded"
			},
			deletes: 1},
		{name: "status 500 with OperationOutcome",
			setup: func(fs *fakeSource) {
				fs.files["Patient"] = []string{patients("p1")}
				fs.beforeDone = []fakeResponse{{status: 500, contentType: "application/fhir+json", body: boom}}
			},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: Async Http resonse error: [statusCode: 500, operationOutcome: " +
					"OperationOutcome(resourceType=OperationOutcome, issue=[OperationOutcome.Issue(severity=error, code=exception, diagnostics=boom)])]"
			},
			deletes: 1},
		{name: "status 502 plain text",
			setup: func(fs *fakeSource) {
				fs.files["Patient"] = []string{patients("p1")}
				fs.beforeDone = []fakeResponse{{status: 502, contentType: "text/plain", body: "bad gateway"}}
			},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: Async Http resonse error: [statusCode: 502]"
			},
			deletes: 1},
		{name: "kick-off 500 is not retried and not deleted",
			setup: func(fs *fakeSource) {
				fs.kickOffResp = &fakeResponse{status: 500, contentType: "application/fhir+json", body: boom}
			},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: Async Http resonse error: [statusCode: 500, operationOutcome: " +
					"OperationOutcome(resourceType=OperationOutcome, issue=[OperationOutcome.Issue(severity=error, code=exception, diagnostics=boom)])]"
			},
			deletes: 0},
		{name: "kick-off without Content-Location",
			setup:       func(fs *fakeSource) { fs.kickOffResp = &fakeResponse{status: 202} },
			diagnostics: func(*fakeSource) string { return "Ping and pull import failed: KickOff: Missing content-location" },
			deletes:     0},
		{name: "manifest origin mismatch",
			setup: func(fs *fakeSource) {
				fs.files["Patient"] = []string{patients("p1")}
				fs.foreignOrigin = "http://evil.example.com:8080"
			},
			diagnostics: func(fs *fakeSource) string {
				return "Ping and pull import failed: Manifest download URL origin does not match export URL origin: " +
					"http://evil.example.com:8080/files/Patient-0.ndjson (expected origin: " + fs.srv.URL + ")"
			},
			deletes: 1},
		{name: "four transient errors in a row",
			setup: func(fs *fakeSource) {
				fs.files["Patient"] = []string{patients("p1")}
				tr := fakeResponse{status: 503, contentType: "application/fhir+json",
					body: `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"busy"}]}`}
				fs.beforeDone = []fakeResponse{tr, tr, tr, tr}
			},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: Async Http resonse error: [statusCode: 503, operationOutcome: " +
					"OperationOutcome(resourceType=OperationOutcome, issue=[OperationOutcome.Issue(severity=error, code=transient, diagnostics=busy)])]"
			},
			deletes: 1},
		{name: "download 404",
			setup: func(fs *fakeSource) {
				fs.files["Patient"] = []string{patients("p1")}
				fs.foreignOrigin = fs.srv.URL + "/missing"
			},
			diagnostics: func(*fakeSource) string { return "Ping and pull import failed: Download failed" },
			deletes:     1},
		{name: "malformed NDJSON",
			setup:       func(fs *fakeSource) { fs.files["Patient"] = []string{"not json\n"} },
			diagnostics: func(*fakeSource) string { return "Ping and pull import failed: Malformed NDJSON at line 1" },
			deletes:     1},
		{name: "static export type",
			setup: func(fs *fakeSource) {},
			body: func(fs *fakeSource) []byte {
				return body(urlParam(fs.base()), codeParam("exportType", "static"))
			},
			diagnostics: func(*fakeSource) string {
				return "Ping and pull import failed: Static export type is not currently supported. Please use dynamic mode."
			},
			deletes: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeSource(t)
			fs.configure(tc.setup)
			h := pullHarness(t, fs, Config{})
			b := body(urlParam(fs.base()))
			if tc.body != nil {
				b = tc.body(fs)
			}
			loc := h.mustKickOff(t, kickOffHeaders(), b)
			wantError(t, pollUntilDone(t, loc, nil), 400, tc.diagnostics(fs))
			h.emu.Close() // wait for the job goroutine: the DELETE to the source happens before it ends
			if _, _, deletes, _, _ := fs.counts(); deletes != tc.deletes {
				t.Fatalf("source deletes = %d, want %d", deletes, tc.deletes)
			}
			if len(h.emu.ResourceTypes()) != 0 {
				t.Fatalf("a failed import wrote %v", h.emu.ResourceTypes())
			}
		})
	}
}

func TestPullRetries(t *testing.T) {
	t.Run("429 retried", func(t *testing.T) {
		fs := newFakeSource(t)
		fs.configure(func(fs *fakeSource) {
			fs.files["Patient"] = []string{patients("p1")}
			fs.beforeDone = []fakeResponse{{status: 429}, {status: 429, retryAfter: "0"}, {status: 202}, {status: 429}}
		})
		h := pullHarness(t, fs, Config{})
		loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
		if r := pollUntilDone(t, loc, nil); r.status != 200 {
			t.Fatalf("want 200, got %s", r)
		}
		if _, polls, _, _, _ := fs.counts(); polls != 5 {
			t.Fatalf("source polls = %d, want 5", polls)
		}
	})
	t.Run("three transient errors retried", func(t *testing.T) {
		fs := newFakeSource(t)
		tr := fakeResponse{status: 503, contentType: "application/fhir+json",
			body: `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient"}]}`}
		fs.configure(func(fs *fakeSource) {
			fs.files["Patient"] = []string{patients("p1")}
			fs.beforeDone = []fakeResponse{tr, tr, tr}
		})
		h := pullHarness(t, fs, Config{})
		loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
		if r := pollUntilDone(t, loc, nil); r.status != 200 {
			t.Fatalf("want 200, got %s", r)
		}
	})
	t.Run("Retry-After honoured", func(t *testing.T) {
		fs := newFakeSource(t)
		fs.configure(func(fs *fakeSource) {
			fs.files["Patient"] = []string{patients("p1")}
			fs.beforeDone = []fakeResponse{{status: 202, retryAfter: "1"}}
		})
		h := pullHarness(t, fs, Config{})
		start := time.Now()
		loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
		if r := pollUntilDone(t, loc, nil); r.status != 200 {
			t.Fatalf("want 200, got %s", r)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("finished after %s: Retry-After: 1 not honoured", el)
		}
	})
}

func TestPullSendsSourceToken(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{"Patient": {patients("p1")}})
	h := pullHarness(t, fs, Config{SourceToken: func(context.Context) (string, error) { return "s3cret", nil }})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
	pollUntilDone(t, loc, nil)
	if got := fs.lastKickOff(t).header.Get("Authorization"); got != "Bearer s3cret" {
		t.Fatalf("Authorization at source = %q", got)
	}
}

// DELETE cancels best-effort: the export and downloads finish, the import does not happen.
func TestDeleteBeforeImportSkipsImport(t *testing.T) {
	fs := newFakeSource(t)
	gate := make(chan struct{})
	fs.configure(func(fs *fakeSource) {
		fs.files["Patient"] = []string{patients("p1")}
		fs.gate = gate
	})
	h := pullHarness(t, fs, Config{})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
	eventually(t, 5*time.Second, func() bool { _, polls, _, _, _ := fs.counts(); return polls > 0 }, "source not polled")
	if r := do(t, http.MethodDelete, loc, nil, nil); r.status != 202 {
		t.Fatalf("delete: %s", r)
	}
	close(gate)
	eventually(t, 5*time.Second, func() bool { _, _, deletes, _, _ := fs.counts(); return deletes == 1 }, "export not finished")
	h.emu.Close()
	if _, _, _, downloads, _ := fs.counts(); len(downloads) != 1 {
		t.Fatalf("downloads %v: the download must go on after DELETE", downloads)
	}
	if len(h.emu.ResourceTypes()) != 0 {
		t.Fatal("a deleted job imported")
	}
}

func TestRestartStopsPullJobs(t *testing.T) {
	fs := newFakeSource(t)
	gate := make(chan struct{})
	fs.configure(func(fs *fakeSource) {
		fs.files["Patient"] = []string{patients("p1")}
		fs.gate = gate
	})
	h := pullHarness(t, fs, Config{})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
	eventually(t, 5*time.Second, func() bool { _, polls, _, _, _ := fs.counts(); return polls > 0 }, "source not polled")
	h.emu.Restart()
	close(gate)
	wantError(t, poll(t, loc, nil), 404, "Job ID not found")
	h.emu.Close()
	if len(h.emu.ResourceTypes()) != 0 {
		t.Fatal("a job forgotten by a restart imported")
	}
}

// A source token the token server refuses fails the job with the server's reason, not a bare
// "System error in bulk export", and the source is never asked.
func TestPullSourceTokenRefusalIsTheCause(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{"Patient": {patients("p1")}})
	refused := &auth.Error{Op: "token", Status: 400, Code: "invalid_scope", Description: "system/*.write is not allowed"}
	h := pullHarness(t, fs, Config{SourceToken: func(context.Context) (string, error) { return "", refused }})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
	wantError(t, pollUntilDone(t, loc, nil), 400,
		"Ping and pull import failed: Cannot obtain an access token for the source: token server refused: invalid_scope: system/*.write is not allowed")
	if kickOffs, _, _, _, _ := fs.counts(); kickOffs != 0 {
		t.Errorf("source kick-offs = %d without a token, want 0", kickOffs)
	}
}
