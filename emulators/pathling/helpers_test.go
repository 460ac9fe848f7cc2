package pathling

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventually waits for cond with a deadline, polling briefly.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// harness is an emulator behind a real loopback HTTP server.
type harness struct {
	emu *Emulator
	srv *httptest.Server
}

func (h *harness) base() string { return h.srv.URL + "/fhir" }

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	emu, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		emu.Close()
	})
	return &harness{emu: emu, srv: srv}
}

// scriptedHarness is a scripted-mode emulator that allows any http(s) export URL.
func scriptedHarness(t *testing.T, cfg Config) *harness {
	cfg.Mode = ModeScripted
	if cfg.AllowableExportURLs == nil {
		cfg.AllowableExportURLs = []string{"https://source.example.com/fhir", "http://127.0.0.1"}
	}
	cfg.AllowInsecureURLs = true
	cfg.AllowInternalURLs = true
	return newHarness(t, cfg)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

func do(t *testing.T, method, target string, header http.Header, body []byte) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// kickOffHeaders are the headers a correct client sends.
func kickOffHeaders() http.Header {
	return http.Header{
		"Content-Type": {"application/fhir+json"},
		"Accept":       {"application/fhir+json"},
		"Prefer":       {"respond-async"},
	}
}

// param is one Parameters.parameter entry, written as JSON.
type param map[string]any

func body(ps ...param) []byte {
	b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": ps})
	return b
}

func urlParam(u string) param          { return param{"name": "exportUrl", "valueUrl": u} }
func codeParam(n, v string) param      { return param{"name": n, "valueCode": v} }
func strParam(n, v string) param       { return param{"name": n, "valueString": v} }
func instParam(n, v string) param      { return param{"name": n, "valueInstant": v} }
func typedParam(n, vt, v string) param { return param{"name": n, "value" + vt: v} }

func (h *harness) kickOff(t *testing.T, header http.Header, b []byte) response {
	t.Helper()
	return do(t, http.MethodPost, h.base()+"/$import-pnp", header, b)
}

// mustKickOff kicks off and returns the Content-Location.
func (h *harness) mustKickOff(t *testing.T, header http.Header, b []byte) string {
	t.Helper()
	r := h.kickOff(t, header, b)
	if r.status != http.StatusAccepted {
		t.Fatalf("kick-off: want 202, got %s", r)
	}
	loc := r.header.Get("Content-Location")
	if loc == "" {
		t.Fatal("kick-off: no Content-Location")
	}
	return loc
}

func poll(t *testing.T, loc string, header http.Header) response {
	t.Helper()
	if header == nil {
		header = http.Header{"Accept": {"application/fhir+json"}}
	}
	return do(t, http.MethodGet, loc, header, nil)
}

// pollUntilDone polls until the job leaves 202 and returns that response.
func pollUntilDone(t *testing.T, loc string, header http.Header) response {
	t.Helper()
	var last response
	eventually(t, 10*time.Second, func() bool {
		last = poll(t, loc, header)
		return last.status != http.StatusAccepted
	}, "job %s still running", loc)
	return last
}

var errorBodyPattern = regexp.MustCompile(`^\{"resourceType":"OperationOutcome","issue":\[\{"severity":"error","code":"(processing|forbidden)","diagnostics":"(.*)"\}\]\}$`)

// wantError asserts Pathling's error shape (compact JSON, one issue) and the exact diagnostics.
func wantError(t *testing.T, r response, status int, diagnostics string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want status %d, got %s", status, r)
	}
	want := string(compactJSON(outcome("error", map[bool]string{true: "forbidden", false: "processing"}[status == 403], diagnostics)))
	if string(r.body) != want {
		t.Fatalf("body mismatch\n got: %s\nwant: %s", r.body, want)
	}
	if !errorBodyPattern.Match(r.body) {
		t.Fatalf("body is not Pathling's compact error shape: %s", r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeFHIRJSON {
		t.Fatalf("Content-Type = %q", ct)
	}
}

// ---- a fake bulk-export source ----

type recordedRequest struct {
	method   string
	path     string
	rawQuery string
	query    url.Values
	header   http.Header
}

type fakeResponse struct {
	status      int
	retryAfter  string
	contentType string
	body        string
}

// fakeSource is a minimal FHIR bulk-export server: GET <base>/$export kicks off, the status URL
// answers the scripted responses then the manifest, files are served from memory, DELETE on
// the status URL is recorded.
type fakeSource struct {
	srv *httptest.Server

	mu            sync.Mutex
	files         map[string][]string // resource type -> file contents (one entry per file)
	kickOffResp   *fakeResponse       // instead of 202
	beforeDone    []fakeResponse      // status responses before the manifest
	gate          chan struct{}       // while open (not closed), status polls answer 202
	foreignOrigin string              // when set, file URLs use this origin
	kickOffs      []recordedRequest
	statusPolls   int
	deletes       int
	downloads     []string
	deletedReads  int
}

func newFakeSource(t *testing.T) *fakeSource {
	t.Helper()
	fs := &fakeSource{files: map[string][]string{}}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeSource) base() string { return fs.srv.URL + "/fhir" }

// configure changes the source's behaviour under its lock.
func (fs *fakeSource) configure(f func(fs *fakeSource)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

func (fs *fakeSource) setFiles(files map[string][]string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files = files
}

func (fs *fakeSource) record(r *http.Request) recordedRequest {
	return recordedRequest{method: r.Method, path: r.URL.Path, rawQuery: r.URL.RawQuery, query: r.URL.Query(), header: r.Header.Clone()}
}

func (fs *fakeSource) lastKickOff(t *testing.T) recordedRequest {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.kickOffs) == 0 {
		t.Fatal("source saw no kick-off")
	}
	return fs.kickOffs[len(fs.kickOffs)-1]
}

func (fs *fakeSource) counts() (kickOffs, polls, deletes int, downloads []string, deletedReads int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.kickOffs), fs.statusPolls, fs.deletes, append([]string(nil), fs.downloads...), fs.deletedReads
}

func writeFake(w http.ResponseWriter, fr fakeResponse) {
	if fr.retryAfter != "" {
		w.Header().Set("Retry-After", fr.retryAfter)
	}
	if fr.contentType != "" {
		w.Header().Set("Content-Type", fr.contentType)
	}
	w.WriteHeader(fr.status)
	_, _ = io.WriteString(w, fr.body)
}

func (fs *fakeSource) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/$export"):
		fs.kickOffs = append(fs.kickOffs, fs.record(r))
		if fs.kickOffResp != nil {
			writeFake(w, *fs.kickOffResp)
			return
		}
		w.Header().Set("Content-Location", fs.srv.URL+"/status/1")
		w.WriteHeader(http.StatusAccepted)
	case p == "/status/1" && r.Method == http.MethodGet:
		fs.statusPolls++
		if fs.gate != nil {
			select {
			case <-fs.gate:
			default:
				w.Header().Set("X-Progress", "exporting")
				w.WriteHeader(http.StatusAccepted)
				return
			}
		}
		if len(fs.beforeDone) > 0 {
			fr := fs.beforeDone[0]
			fs.beforeDone = fs.beforeDone[1:]
			writeFake(w, fr)
			return
		}
		fs.writeManifest(w)
	case p == "/status/1" && r.Method == http.MethodDelete:
		fs.deletes++
		w.WriteHeader(http.StatusAccepted)
	case strings.HasPrefix(p, "/files/"):
		name := strings.TrimPrefix(p, "/files/")
		fs.downloads = append(fs.downloads, name)
		typ, idx, ok := parseFileName(name)
		if !ok || idx >= len(fs.files[typ]) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		_, _ = io.WriteString(w, fs.files[typ][idx])
	case strings.HasPrefix(p, "/deleted/"):
		fs.deletedReads++
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func parseFileName(name string) (string, int, bool) {
	var typ string
	var idx int
	name = strings.TrimSuffix(name, ".ndjson")
	i := strings.LastIndex(name, "-")
	if i < 0 {
		return "", 0, false
	}
	typ = name[:i]
	if _, err := fmt.Sscanf(name[i+1:], "%d", &idx); err != nil {
		return "", 0, false
	}
	return typ, idx, true
}

func (fs *fakeSource) writeManifest(w http.ResponseWriter) {
	origin := fs.srv.URL
	if fs.foreignOrigin != "" {
		origin = fs.foreignOrigin
	}
	type item struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	}
	output := []item{}
	for _, typ := range sortedKeys(fs.files) {
		for i := range fs.files[typ] {
			output = append(output, item{Type: typ, URL: fmt.Sprintf("%s/files/%s-%d.ndjson", origin, typ, i)})
		}
	}
	m := map[string]any{
		"transactionTime":     "2025-11-11T00:00:00Z",
		"request":             fs.srv.URL + "/fhir/$export",
		"requiresAccessToken": false,
		"output":              output,
		"deleted":             []item{{Type: "Bundle", URL: fs.srv.URL + "/deleted/Bundle-0.ndjson"}},
		"error":               []item{},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

// pullHarness is a pull-mode emulator allowed to export from the fake source.
func pullHarness(t *testing.T, fs *fakeSource, cfg Config) *harness {
	cfg.Mode = ModePull
	if cfg.AllowableExportURLs == nil {
		cfg.AllowableExportURLs = []string{fs.srv.URL}
	}
	cfg.AllowInsecureURLs = true
	cfg.AllowInternalURLs = true
	return newHarness(t, cfg)
}

func patients(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, `{"resourceType":"Patient","id":"%s","name":[{"family":"F%s"}]}`+"\n", id, id)
	}
	return b.String()
}

func observations(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, `{"resourceType":"Observation","id":"%s","status":"final"}`+"\n", id)
	}
	return b.String()
}
