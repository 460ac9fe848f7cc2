package pathling

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const parametersResult = `{"resourceType":"Parameters","parameter":[` +
	`{"name":"transactionTime","valueString":"2026-03-01T10:20:30.123Z"},` +
	`{"name":"request","valueString":"http://pathling:8080/fhir/$import-pnp"},` +
	`{"name":"output","part":[{"name":"inputUrl","valueUrl":"file:///staging/a/Patient.0000.ndjson"}]},` +
	`{"name":"output","part":[{"name":"inputUrl","valueUrl":"file:///staging/a/Observation.0000.ndjson"}]}]}`

func TestStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	wantResult := &ImportResult{
		TransactionTime:    time.Date(2026, 3, 1, 10, 20, 30, 123000000, time.UTC),
		TransactionTimeRaw: "2026-03-01T10:20:30.123Z",
		Request:            "http://pathling:8080/fhir/$import-pnp",
		Outputs:            []string{"file:///staging/a/Patient.0000.ndjson", "file:///staging/a/Observation.0000.ndjson"},
	}
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		header      map[string]string
		body        string
		want        JobStatus
		failure     Kind
		retryable   bool
	}{
		{name: "running, export phase", status: 202, body: processingOutcome,
			want: JobStatus{State: StateRunning, HTTPStatus: 202}},
		{name: "running with progress", status: 202, header: map[string]string{"X-Progress": "42%"}, body: processingOutcome,
			want: JobStatus{State: StateRunning, HTTPStatus: 202, Progress: "42%"}},
		{name: "running with Retry-After seconds", status: 202, header: map[string]string{"Retry-After": "5"},
			want: JobStatus{State: StateRunning, HTTPStatus: 202, RetryAfter: 5 * time.Second}},
		{name: "running with Retry-After date", status: 202,
			header: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)},
			want:   JobStatus{State: StateRunning, HTTPStatus: 202, RetryAfter: 90 * time.Second}},
		{name: "done, Parameters", status: 200, body: parametersResult,
			want: JobStatus{State: StateDone, HTTPStatus: 200, Result: wantResult}},
		{name: "done, plain JSON", status: 200, contentType: "application/json",
			body: `{"transactionTime":"2026-03-01T10:20:30.123Z","request":"http://pathling:8080/fhir/$import-pnp","output":[` +
				`{"inputUrl":"file:///staging/a/Patient.0000.ndjson"},{"inputUrl":"file:///staging/a/Observation.0000.ndjson"}]}`,
			want: JobStatus{State: StateDone, HTTPStatus: 200, Result: wantResult}},
		{name: "failed, empty export", status: 400,
			body:    errorOutcome("processing", "Ping and pull import failed: No files with extension .ndjson were downloaded"),
			want:    JobStatus{State: StateFailed, HTTPStatus: 400},
			failure: KindEmptyExport},
		{name: "failed, source 500", status: 400,
			body:    errorOutcome("processing", "Ping and pull import failed: Async Http resonse error: [statusCode: 500, operationOutcome: null]"),
			want:    JobStatus{State: StateFailed, HTTPStatus: 400},
			failure: KindImportFailed, retryable: true},
		{name: "failed, origin mismatch", status: 400,
			body:    errorOutcome("processing", "Ping and pull import failed: Manifest download URL origin does not match export URL origin: https://x"),
			want:    JobStatus{State: StateFailed, HTTPStatus: 400},
			failure: KindImportFailed},
		{name: "lost", status: 404, body: errorOutcome("processing", "Job ID not found"),
			want:    JobStatus{State: StateLost, HTTPStatus: 404},
			failure: KindJobLost, retryable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
					w.WriteHeader(tc.status)
					_, _ = w.Write([]byte(tc.body))
					return
				}
				writeFHIR(w, tc.status, tc.body)
			})
			statusURL := srv.URL + "/fhir/$job?id=" + jobID
			got, err := newClient(t, srv.URL+"/fhir", withClock(now)).Status(context.Background(), statusURL)
			if err != nil {
				t.Fatal(err)
			}
			req := srv.request(t, 0)
			if req.method != http.MethodGet || req.requestURI != "/fhir/$job?id="+jobID {
				t.Errorf("request = %s %s", req.method, req.requestURI)
			}
			if a := req.header.Values("Accept"); len(a) != 1 || a[0] != "application/fhir+json" {
				t.Errorf("Accept = %q", a)
			}
			if req.header.Get("Prefer") != "" || req.header.Get("Content-Type") != "" {
				t.Error("a poll sends no Prefer and no Content-Type")
			}

			failure := got.Failure
			got.Failure = nil
			if got.State != tc.want.State || got.HTTPStatus != tc.want.HTTPStatus || got.Progress != tc.want.Progress ||
				got.RetryAfter != tc.want.RetryAfter {
				t.Errorf("status = %+v, want %+v", got, tc.want)
			}
			if !resultsEqual(got.Result, tc.want.Result) {
				t.Errorf("result = %+v, want %+v", got.Result, tc.want.Result)
			}
			switch {
			case tc.failure == "" && failure != nil:
				t.Errorf("unexpected failure %v", failure)
			case tc.failure != "":
				if failure == nil {
					t.Fatal("no failure")
				}
				if failure.Kind != tc.failure || failure.Retryable != tc.retryable || failure.Outcome == nil {
					t.Errorf("failure = %+v, want %s retryable=%v with outcome", failure, tc.failure, tc.retryable)
				}
				if !errors.Is(failure, &Error{Kind: tc.failure}) {
					t.Error("errors.Is on Kind failed")
				}
			}
		})
	}
}

func resultsEqual(a, b *ImportResult) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !a.TransactionTime.Equal(b.TransactionTime) || a.TransactionTimeRaw != b.TransactionTimeRaw || a.Request != b.Request ||
		len(a.Outputs) != len(b.Outputs) {
		return false
	}
	for i := range a.Outputs {
		if a.Outputs[i] != b.Outputs[i] {
			return false
		}
	}
	return true
}

func TestStatusErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       Kind
		retryable  bool
		retryAfter time.Duration
	}{
		{name: "403 not the owner", status: 403, body: errorOutcome("forbidden", "The requested job is not owned by the current user"), kind: KindForbidden},
		{name: "429", status: 429, header: map[string]string{"Retry-After": "3"}, kind: KindUnavailable, retryable: true, retryAfter: 3 * time.Second},
		{name: "502", status: 502, body: "bad gateway", kind: KindUnavailable, retryable: true},
		{name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "120"}, kind: KindUnavailable, retryable: true, retryAfter: 2 * time.Minute},
		{name: "200 with garbage", status: 200, body: "<html></html>", kind: KindProtocol},
		{name: "200 with an OperationOutcome", status: 200, body: processingOutcome, kind: KindProtocol},
		{name: "418", status: 418, kind: KindProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				writeFHIR(w, tc.status, tc.body)
			})
			_, err := newClient(t, srv.URL+"/fhir").Status(context.Background(), srv.URL+"/fhir/$job?id=1")
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("want *Error, got %v", err)
			}
			if pe.Kind != tc.kind || pe.Retryable != tc.retryable || pe.RetryAfter != tc.retryAfter || pe.Op != "status" {
				t.Errorf("got %+v; want kind %s retryable %v retryAfter %s", pe, tc.kind, tc.retryable, tc.retryAfter)
			}
		})
	}

	t.Run("bad status URL", func(t *testing.T) {
		c := newClient(t, "http://127.0.0.1:1/fhir")
		for _, u := range []string{"", "/fhir/$job?id=1", "ftp://h/x", "http://u:p@h/x"} {
			if _, err := c.Status(context.Background(), u); !errors.Is(err, ErrProtocol) {
				t.Errorf("Status(%q) err = %v, want ErrProtocol", u, err)
			}
			if err := c.Delete(context.Background(), u); !errors.Is(err, ErrProtocol) {
				t.Errorf("Delete(%q) err = %v, want ErrProtocol", u, err)
			}
		}
	})
}

func TestClassifyFailure(t *testing.T) {
	const prefix = "Ping and pull import failed: "
	for _, tc := range []struct {
		diagnostics string
		kind        Kind
		retryable   bool
	}{
		{prefix + "No files with extension .ndjson were downloaded", KindEmptyExport, false},
		{prefix + "No files with extension .parquet were downloaded", KindEmptyExport, false},
		{prefix + "Async Http resonse error: [statusCode: 500, operationOutcome: {...}]", KindImportFailed, true},
		{prefix + "Async Http resonse error: [statusCode: 503, operationOutcome: null]", KindImportFailed, true},
		{prefix + "Async Http response error: [statusCode: 502]", KindImportFailed, true},
		{prefix + "Async Http resonse error: [statusCode: 401, operationOutcome: null]", KindImportFailed, false},
		{prefix + "Async Http resonse error: [statusCode: 404, operationOutcome: null]", KindImportFailed, false},
		{prefix + "Async Http resonse error: [statusCode: 429, operationOutcome: null]", KindImportFailed, true},
		{prefix + "Download failed", KindImportFailed, true},
		{prefix + "System error in bulk export", KindImportFailed, true},
		{prefix + "Another import operation is currently in progress", KindImportFailed, true},
		{prefix + "java.net.ConnectException: Connection refused", KindImportFailed, true},
		{prefix + "java.net.SocketTimeoutException: Read timed out", KindImportFailed, true},
		{prefix + "java.net.UnknownHostException: source.example.com", KindImportFailed, true},
		{prefix + "I/O error on GET request", KindImportFailed, true},
		{prefix + "Manifest download URL origin does not match export URL origin: https://evil", KindImportFailed, false},
		{prefix + "Static export type is not currently supported", KindImportFailed, false},
		{prefix + "Access is denied: missing authority pathling:write", KindImportFailed, false},
		{"", KindImportFailed, false},
	} {
		kind, retryable := classifyFailure(tc.diagnostics)
		if kind != tc.kind || retryable != tc.retryable {
			t.Errorf("%q: got %s/%v, want %s/%v", tc.diagnostics, kind, retryable, tc.kind, tc.retryable)
		}
	}
}

func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		status int
		kind   Kind // "" means success
	}{
		{202, ""}, {200, ""}, {204, ""}, {404, ""},
		{403, KindForbidden}, {500, KindUnavailable}, {400, KindProtocol},
	} {
		srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
			writeFHIR(w, tc.status, `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"The job and its resources will be deleted."}]}`)
		})
		err := newClient(t, srv.URL+"/fhir").Delete(context.Background(), srv.URL+"/fhir/$job?id="+jobID)
		req := srv.request(t, 0)
		if req.method != http.MethodDelete || req.requestURI != "/fhir/$job?id="+jobID {
			t.Errorf("request = %s %s", req.method, req.requestURI)
		}
		if tc.kind == "" && err != nil {
			t.Errorf("%d: err = %v, want nil", tc.status, err)
		}
		if tc.kind != "" && !errors.Is(err, &Error{Kind: tc.kind}) {
			t.Errorf("%d: err = %v, want %s", tc.status, err, tc.kind)
		}
	}
}

func TestContextAndTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	statusURL := srv.URL + "/fhir/$job?id=1"

	t.Run("caller cancels", func(t *testing.T) {
		c := newClient(t, srv.URL+"/fhir")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := c.Status(ctx, statusURL); done <- err }()
		eventually(t, 5*time.Second, func() bool { return len(srv.requests()) >= 1 })
		cancel()
		select {
		case err := <-done:
			var pe *Error
			if !errors.As(err, &pe) || pe.Kind != KindUnavailable || pe.Retryable || !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want non-retryable unavailable wrapping context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Status did not return after cancel")
		}
	})

	t.Run("per-request timeout without a caller deadline", func(t *testing.T) {
		c := newClient(t, srv.URL+"/fhir", WithRequestTimeout(50*time.Millisecond))
		_, err := c.KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"})
		var pe *Error
		if !errors.As(err, &pe) || pe.Kind != KindUnavailable || !pe.Retryable || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want retryable unavailable wrapping DeadlineExceeded", err)
		}
	})

	t.Run("caller deadline", func(t *testing.T) {
		c := newClient(t, srv.URL+"/fhir")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := c.Delete(ctx, statusURL)
		var pe *Error
		if !errors.As(err, &pe) || pe.Retryable || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want non-retryable deadline error", err)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		dead := newFakeServer(t, func(http.ResponseWriter, *http.Request, int) {})
		u := dead.URL
		dead.Close()
		_, err := newClient(t, u+"/fhir").Status(context.Background(), u+"/fhir/$job?id=1")
		var pe *Error
		if !errors.As(err, &pe) || pe.Kind != KindUnavailable || !pe.Retryable || pe.HTTPStatus != 0 {
			t.Fatalf("err = %v, want retryable unavailable", err)
		}
	})
}

func TestBodyCapAndKeepAlive(t *testing.T) {
	big := `{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"` + strings.Repeat("x", maxBodyBytes) + `"}]}`
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Query().Get("id") {
		case "big":
			writeFHIR(w, http.StatusOK, big)
		case "failed":
			writeFHIR(w, http.StatusBadRequest, errorOutcome("processing", strings.Repeat("y", 10000)))
		default:
			writeFHIR(w, http.StatusAccepted, processingOutcome)
		}
	})
	c := newClient(t, srv.URL+"/fhir")
	ctx := context.Background()
	_, err := c.Status(ctx, srv.URL+"/fhir/$job?id=big")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized body: err = %v, want ErrProtocol", err)
	}
	before := srv.newConns.Load()
	for _, id := range []string{"a", "failed", "b", "failed", "c"} {
		if _, err := c.Status(ctx, srv.URL+"/fhir/$job?id="+id); err != nil {
			t.Fatal(err)
		}
	}
	if opened := srv.newConns.Load() - before; opened > 1 {
		t.Errorf("opened %d connections for 5 sequential polls; bodies are not drained for keep-alive", opened)
	}
}

// eventually fails the test unless cond becomes true within timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		<-tick.C
	}
}
