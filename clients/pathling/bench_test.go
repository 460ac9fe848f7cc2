package pathling

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The bodies and headers bench/standin.go answers with (Pathling's wire format).
const (
	benchAccepted   = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job accepted for processing, see the Content-Location header for the URL at which status can be queried"}]}`
	benchProcessing = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job currently processing"}]}`
)

// newBenchServer is a stand-in for one target at /t/t00001/fhir on 127.0.0.1.
func newBenchServer(b *testing.B) (srv *httptest.Server, base, statusURL string) {
	b.Helper()
	var result string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", fhirJSON)
		switch {
		case r.Method == http.MethodPost:
			w.Header().Set("Content-Location", statusURL)
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, benchAccepted)
		case r.Method == http.MethodGet:
			w.Header().Set("Cache-Control", "max-age=1")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, result)
		default:
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, benchProcessing)
		}
	}))
	b.Cleanup(srv.Close)
	base = srv.URL + "/t/t00001/fhir"
	statusURL = base + "/$job?id=12345"
	result = `{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueString":"2026-12-03T18:00:00.000+00:00"},` +
		`{"name":"request","valueString":"` + base + `/$import-pnp"},{"name":"output","part":[{"name":"inputUrl","valueUrl":"` +
		srv.URL + `/staging/12345/Patient.ndjson"}]}]}`
	return srv, base, statusURL
}

func benchClient(b *testing.B, base string) *Client {
	b.Helper()
	c, err := New(base)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkKickOff(b *testing.B) {
	srv, base, want := newBenchServer(b)
	c := benchClient(b, base)
	req := ImportRequest{ExportURL: srv.URL + "/source/fhir", SaveMode: SaveModeMerge, Types: []string{"Patient", "Observation"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		got, err := c.KickOff(ctx, req)
		if err != nil || got != want {
			b.Fatal(got, err)
		}
	}
}

func BenchmarkStatusDone(b *testing.B) {
	_, base, statusURL := newBenchServer(b)
	c := benchClient(b, base)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		st, err := c.Status(ctx, statusURL)
		if err != nil || st.State != StateDone || len(st.Result.Outputs) != 1 {
			b.Fatal(st, err)
		}
	}
}

func BenchmarkDelete(b *testing.B) {
	_, base, statusURL := newBenchServer(b)
	c := benchClient(b, base)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Delete(ctx, statusURL); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseImportResult is the 200 body's parsing alone (no HTTP).
func BenchmarkParseImportResult(b *testing.B) {
	body := []byte(`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueString":"2026-12-03T18:00:00.000+00:00"},` +
		`{"name":"request","valueString":"http://127.0.0.1:40000/t/t00001/fhir/$import-pnp"},{"name":"output","part":[{"name":"inputUrl","valueUrl":"` +
		`http://127.0.0.1:40000/staging/12345/Patient.ndjson"}]}]}`)
	b.ReportAllocs()
	for b.Loop() {
		r, err := ParseImportResult(body, "application/fhir+json")
		if err != nil || !strings.HasSuffix(r.Request, "$import-pnp") {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkParameters is the kick-off body alone (validation and encoding).
func BenchmarkParameters(b *testing.B) {
	req := ImportRequest{ExportURL: "http://127.0.0.1:40000/source/fhir", SaveMode: SaveModeMerge, Types: []string{"Patient", "Observation"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := req.Parameters(); err != nil {
			b.Fatal(err)
		}
	}
}
