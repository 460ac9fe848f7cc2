package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// newFakeClock returns a settable test clock.
func newFakeClock() *testenv.Clock {
	return testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// harness is a Server behind a loopback httptest server.
type harness struct {
	t      *testing.T
	src    *Server
	http   *httptest.Server
	base   string // FHIR base URL
	clock  *testenv.Clock
	bearer string // sent on FHIR requests when set
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	clock := newFakeClock()
	if cfg.Clock == nil {
		cfg.Clock = clock.Now
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(src)
	t.Cleanup(func() {
		ts.Close()
		src.Close()
	})
	return &harness{t: t, src: src, http: ts, base: ts.URL + "/fhir", clock: clock}
}

// do sends a request with a deadline and returns the status, headers and body.
func (h *harness) do(method, rawURL string, header http.Header, body io.Reader) (int, http.Header, []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		h.t.Fatalf("new request: %v", err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h.bearer != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+h.bearer)
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("reading body: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

func asyncHeaders() http.Header {
	return http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}}
}

// kickOff starts a GET export with query parameters and returns the status URL.
func (h *harness) kickOff(params url.Values) string {
	h.t.Helper()
	u := h.base + "/$export"
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	status, hdr, body := h.do(http.MethodGet, u, asyncHeaders(), nil)
	if status != http.StatusAccepted {
		h.t.Fatalf("kick-off %s: status %d, body %s", u, status, body)
	}
	loc := hdr.Get("Content-Location")
	if !strings.HasPrefix(loc, h.http.URL+"/fhir/") {
		h.t.Fatalf("Content-Location %q is not an absolute URL on the server", loc)
	}
	return loc
}

// waitManifest polls the status URL until the export completes.
func (h *harness) waitManifest(statusURL string) manifest {
	h.t.Helper()
	for i := 0; i < 100; i++ {
		status, hdr, body := h.do(http.MethodGet, statusURL, nil, nil)
		switch status {
		case http.StatusAccepted:
			continue
		case http.StatusOK:
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				h.t.Fatalf("manifest Content-Type %q", ct)
			}
			var m manifest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				h.t.Fatalf("manifest %s: %v", body, err)
			}
			return m
		default:
			h.t.Fatalf("status poll: %d %s", status, body)
		}
	}
	h.t.Fatalf("export %s did not complete within 100 polls", statusURL)
	return manifest{}
}

// download fetches one NDJSON file and returns its lines, each checked to be a JSON object.
func (h *harness) download(fileURL string) []map[string]any {
	h.t.Helper()
	status, hdr, body := h.do(http.MethodGet, fileURL, nil, nil)
	if status != http.StatusOK {
		h.t.Fatalf("download %s: %d %s", fileURL, status, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/fhir+ndjson" {
		h.t.Fatalf("file Content-Type %q", ct)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var obj map[string]any
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			h.t.Fatalf("invalid NDJSON line %q: %v", sc.Text(), err)
		}
		lines = append(lines, obj)
	}
	if len(body) > 0 && body[len(body)-1] != '\n' {
		h.t.Fatalf("NDJSON file does not end with a newline")
	}
	return lines
}

// exportResult is a downloaded export: resources by type and id, deletions as "Type/id".
type exportResult struct {
	manifest  manifest
	resources map[string]map[string]map[string]any
	deleted   []string
}

func (r exportResult) count(typ string) int { return len(r.resources[typ]) }

// export runs a whole export and downloads everything.
func (h *harness) export(params url.Values) exportResult {
	h.t.Helper()
	m := h.waitManifest(h.kickOff(params))
	return h.fetchAll(m)
}

func (h *harness) fetchAll(m manifest) exportResult {
	h.t.Helper()
	res := exportResult{manifest: m, resources: map[string]map[string]map[string]any{}}
	for _, f := range m.Output {
		lines := h.download(f.URL)
		if len(lines) != f.Count {
			h.t.Fatalf("file %s: manifest count %d, %d lines", f.URL, f.Count, len(lines))
		}
		for _, obj := range lines {
			typ, _ := obj["resourceType"].(string)
			id, _ := obj["id"].(string)
			if typ != f.Type || id == "" {
				h.t.Fatalf("file %s (type %s) holds resourceType %q id %q", f.URL, f.Type, typ, id)
			}
			if res.resources[typ] == nil {
				res.resources[typ] = map[string]map[string]any{}
			}
			if _, dup := res.resources[typ][id]; dup {
				h.t.Fatalf("%s/%s exported twice", typ, id)
			}
			res.resources[typ][id] = obj
		}
	}
	for _, f := range m.Deleted {
		if f.Type != "Bundle" {
			h.t.Fatalf("deleted file type %q, want Bundle", f.Type)
		}
		for _, b := range h.download(f.URL) {
			if b["resourceType"] != "Bundle" || b["type"] != "transaction" {
				h.t.Fatalf("deleted line is not a transaction Bundle: %v", b)
			}
			for _, e := range b["entry"].([]any) {
				req := e.(map[string]any)["request"].(map[string]any)
				if req["method"] != "DELETE" {
					h.t.Fatalf("deleted entry method %v", req["method"])
				}
				res.deleted = append(res.deleted, req["url"].(string))
			}
		}
	}
	return res
}

// meta returns versionId and lastUpdated of a decoded resource.
func meta(obj map[string]any) (string, string) {
	m, _ := obj["meta"].(map[string]any)
	v, _ := m["versionId"].(string)
	lu, _ := m["lastUpdated"].(string)
	return v, lu
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// anyID returns some id of a type's current resources.
func anyID(t *testing.T, s *Server, typ string) string {
	t.Helper()
	for id := range s.Resources(typ) {
		return id
	}
	t.Fatalf("no %s resources", typ)
	return ""
}

// outcomeDiagnostics decodes an OperationOutcome body and returns its first diagnostics.
func outcomeDiagnostics(t *testing.T, body []byte) string {
	t.Helper()
	var oo operationOutcome
	if err := json.Unmarshal(body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("body is not an OperationOutcome: %s", body)
	}
	return oo.Issue[0].Diagnostics
}
