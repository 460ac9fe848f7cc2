package pathling

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/auth"
)

var update = flag.Bool("update", false, "rewrite golden files")

const jobID = "3f1b9a4e-8c2d-4e6f-9a7b-1c2d3e4f5a6b"

func everyParameter() ImportRequest {
	since := time.Date(2025, 1, 1, 1, 2, 3, 456789000, time.FixedZone("CET", 3600))
	until := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	return ImportRequest{
		ExportURL:             "https://source.example.com/fhir",
		SaveMode:              SaveModeMerge,
		ExportType:            ExportTypeDynamic,
		InputFormat:           InputFormatNDJSON,
		Types:                 []string{"Patient", "Observation"},
		Elements:              []string{"id", "meta"},
		TypeFilters:           []string{"Observation?status=final&code=1234-5"},
		IncludeAssociatedData: []string{"LatestProvenanceResources"},
		Since:                 &since,
		Until:                 &until,
	}
}

func TestKickOffRequestEveryParameter(t *testing.T) {
	var base string
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Location", base+"/$job?id="+jobID)
		w.Header().Set("ETag", `W/"1"`)
		writeFHIR(w, http.StatusAccepted, acceptedOutcome)
	})
	base = srv.URL + "/fhir"
	c := newClient(t, base+"/", WithTokenSource(auth.Static("secret-token")), WithUserAgent("sync-test/1"))

	statusURL, err := c.KickOff(context.Background(), everyParameter())
	if err != nil {
		t.Fatal(err)
	}
	if want := base + "/$job?id=" + jobID; statusURL != want {
		t.Errorf("status URL = %q, want %q", statusURL, want)
	}

	req := srv.request(t, 0)
	if req.method != http.MethodPost || req.requestURI != "/fhir/$import-pnp" {
		t.Errorf("request = %s %s, want POST /fhir/$import-pnp", req.method, req.requestURI)
	}
	for name, want := range map[string]string{
		"Accept":        "application/fhir+json",
		"Prefer":        "respond-async",
		"Content-Type":  "application/fhir+json",
		"Authorization": "Bearer secret-token",
		"User-Agent":    "sync-test/1",
	} {
		if got := req.header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}

	golden := filepath.Join("testdata", "kickoff-every-parameter.json")
	if *update {
		if err := os.WriteFile(golden, append(req.body, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(req.body, bytes.TrimSuffix(want, []byte("\n"))) {
		t.Errorf("body differs from %s:\n got: %s\nwant: %s", golden, req.body, want)
	}
}

func TestKickOffMinimalBody(t *testing.T) {
	body, err := ImportRequest{ExportURL: "https://s/fhir"}.Parameters()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"resourceType":"Parameters","parameter":[{"name":"exportUrl","valueUrl":"https://s/fhir"}]}`
	if string(body) != want {
		t.Errorf("body = %s\nwant %s", body, want)
	}
}

func TestFormatInstant(t *testing.T) {
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), "2025-01-01T00:00:00.000Z"},
		{time.Date(2025, 1, 1, 2, 0, 0, 999999999, time.FixedZone("", 2*3600)), "2025-01-01T00:00:00.999Z"},
		{time.Date(2024, 12, 31, 23, 59, 59, 1000000, time.FixedZone("", -5*3600)), "2025-01-01T04:59:59.001Z"},
	} {
		if got := formatInstant(tc.in); got != tc.want {
			t.Errorf("formatInstant(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestKickOffValidation(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Error("an invalid request must not be sent")
	})
	c := newClient(t, srv.URL+"/fhir")
	later := time.Now()
	earlier := later.Add(-time.Hour)
	zero := time.Time{}
	for name, req := range map[string]ImportRequest{
		"no export url":     {},
		"relative url":      {ExportURL: "/fhir"},
		"userinfo":          {ExportURL: "https://u:p@s/fhir"},
		"unknown save mode": {ExportURL: "https://s/fhir", SaveMode: "Merge"},
		"unknown type":      {ExportURL: "https://s/fhir", ExportType: "full"},
		"empty _type":       {ExportURL: "https://s/fhir", Types: []string{"Patient", ""}},
		"since after until": {ExportURL: "https://s/fhir", Since: &later, Until: &earlier},
		"zero since":        {ExportURL: "https://s/fhir", Since: &zero},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.KickOff(context.Background(), req)
			var pe *Error
			if !errors.As(err, &pe) || pe.Kind != KindRejected || pe.HTTPStatus != 0 || pe.Retryable {
				t.Fatalf("err = %v, want client-side KindRejected", err)
			}
		})
	}
}

func TestKickOffContentLocation(t *testing.T) {
	for _, tc := range []struct {
		name, location, want string
		kind                 Kind
	}{
		{"absolute", "http://pathling:8080/fhir/$job?id=" + jobID, "http://pathling:8080/fhir/$job?id=" + jobID, ""},
		{"root-relative", "/fhir/$job?id=" + jobID, "{base}/$job?id=" + jobID, ""},
		{"relative", "$job?id=" + jobID, "{base}/$job?id=" + jobID, ""},
		{"missing", "", "", KindProtocol},
		{"not http", "ftp://pathling/fhir/$job?id=1", "", KindProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if tc.location != "" {
					w.Header().Set("Content-Location", tc.location)
				}
				// A body mentioning Content-Location must not confuse anything
				// (it does the seed's grep).
				writeFHIR(w, http.StatusAccepted, acceptedOutcome)
			})
			base := srv.URL + "/fhir"
			got, err := newClient(t, base).KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"})
			if tc.kind != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Kind != tc.kind {
					t.Fatalf("err = %v, want %s", err, tc.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(tc.want, "{base}", base); got != want {
				t.Errorf("status URL = %q, want %q", got, want)
			}
		})
	}
}

func TestKickOffErrors(t *testing.T) {
	const invalidInput = "au.csiro.pathling.errors.InvalidUserInputError: Unknown saveMode."
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       Kind
		retryable  bool
		retryAfter time.Duration
		message    string
	}{
		{name: "400 with a Java class prefix", status: 400, body: errorOutcome("processing", invalidInput),
			kind: KindRejected, message: "Unknown saveMode."},
		{name: "400 export url policy", status: 400,
			body: errorOutcome("processing", "exportUrl is not in the list of allowable export URLs"),
			kind: KindRejected, message: "exportUrl is not in the list of allowable export URLs"},
		{name: "403", status: 403, body: errorOutcome("forbidden", "Access is denied"), kind: KindForbidden, message: "Access is denied"},
		{name: "404 wrong base", status: 404, body: "not found", kind: KindRejected, message: "Not Found"},
		{name: "429 with Retry-After", status: 429, header: map[string]string{"Retry-After": "7"},
			kind: KindUnavailable, retryable: true, retryAfter: 7 * time.Second},
		{name: "500", status: 500, body: "<html>boom</html>", kind: KindUnavailable, retryable: true, message: "Internal Server Error"},
		{name: "503", status: 503, kind: KindUnavailable, retryable: true},
		{name: "200 instead of 202", status: 200, body: acceptedOutcome, kind: KindProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				writeFHIR(w, tc.status, tc.body)
			})
			_, err := newClient(t, srv.URL+"/fhir").KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"})
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("want *Error, got %T %v", err, err)
			}
			if pe.Kind != tc.kind || pe.Retryable != tc.retryable || pe.HTTPStatus != tc.status || pe.RetryAfter != tc.retryAfter {
				t.Errorf("got kind %s retryable %v status %d retryAfter %s; want %s %v %d %s",
					pe.Kind, pe.Retryable, pe.HTTPStatus, pe.RetryAfter, tc.kind, tc.retryable, tc.status, tc.retryAfter)
			}
			if tc.message != "" && pe.Message != tc.message {
				t.Errorf("message = %q, want %q", pe.Message, tc.message)
			}
			if pe.Op != "kick-off" || !strings.HasPrefix(err.Error(), "pathling: kick-off: ") {
				t.Errorf("error text %q lacks the operation", err.Error())
			}
			if tc.status == 400 && (pe.Outcome == nil || len(pe.Outcome.Issues) != 1) {
				t.Errorf("outcome = %+v, want the parsed OperationOutcome", pe.Outcome)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("requests = %d, want 1 (no internal retries)", n)
			}
		})
	}
}

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request, base string) {
		switch r.Method {
		case http.MethodPost:
			w.Header().Set("Content-Location", base+"/$job?id="+jobID)
			writeFHIR(w, http.StatusAccepted, acceptedOutcome)
		case http.MethodGet:
			writeFHIR(w, http.StatusAccepted, processingOutcome)
		case http.MethodDelete:
			writeFHIR(w, http.StatusAccepted, acceptedOutcome)
		}
	}
	calls := map[string]func(c *Client, statusURL string) error{
		"kick-off": func(c *Client, _ string) error {
			_, err := c.KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"})
			return err
		},
		"status": func(c *Client, u string) error { _, err := c.Status(context.Background(), u); return err },
		"delete": func(c *Client, u string) error { return c.Delete(context.Background(), u) },
	}
	for name, call := range calls {
		t.Run(name+" succeeds with the fresh token", func(t *testing.T) {
			var base string
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if r.Header.Get("Authorization") != "Bearer t2" {
					writeFHIR(w, http.StatusUnauthorized, errorOutcome("login", "Authentication failed"))
					return
				}
				ok(w, r, base)
			})
			base = srv.URL + "/fhir"
			tokens := &fakeTokens{}
			c := newClient(t, base, WithTokenSource(tokens))
			if err := call(c, base+"/$job?id="+jobID); err != nil {
				t.Fatal(err)
			}
			reqs := srv.requests()
			if len(reqs) != 2 || reqs[0].header.Get("Authorization") != "Bearer t1" {
				t.Fatalf("requests = %d, want t1 then t2", len(reqs))
			}
			if len(tokens.invalidated) != 1 || tokens.invalidated[0] != "t1" {
				t.Errorf("invalidated = %v, want [t1]", tokens.invalidated)
			}
			if name == "kick-off" && !bytes.Equal(reqs[0].body, reqs[1].body) {
				t.Error("the retry sent a different body")
			}
		})
		t.Run(name+" gives up after one refresh", func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				writeFHIR(w, http.StatusUnauthorized, errorOutcome("login", "Authentication failed"))
			})
			base := srv.URL + "/fhir"
			c := newClient(t, base, WithTokenSource(&fakeTokens{}))
			err := call(c, base+"/$job?id="+jobID)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			var pe *Error
			if errors.As(err, &pe) && pe.Retryable {
				t.Error("unauthorized must not be retryable")
			}
			if n := len(srv.requests()); n != 2 {
				t.Errorf("requests = %d, want 2", n)
			}
		})
	}

	t.Run("no token source: 401 at once", func(t *testing.T) {
		srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
			writeFHIR(w, http.StatusUnauthorized, "")
		})
		_, err := newClient(t, srv.URL+"/fhir").KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"})
		if !errors.Is(err, ErrUnauthorized) || len(srv.requests()) != 1 {
			t.Fatalf("err = %v after %d requests", err, len(srv.requests()))
		}
		if h := srv.request(t, 0).header.Get("Authorization"); h != "" {
			t.Errorf("Authorization = %q without a token source", h)
		}
	})
}

func TestTokenSourceFailure(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Error("no request without a token")
	})
	for _, tc := range []struct {
		name      string
		err       error
		kind      Kind
		retryable bool
	}{
		{"token endpoint down", &auth.Error{Op: "token", Status: 503, Retryable: true}, KindUnavailable, true},
		{"client rejected", &auth.Error{Op: "token", Status: 401, Code: "invalid_client"}, KindUnauthorized, false},
		{"other", errors.New("boom"), KindUnauthorized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, srv.URL+"/fhir", WithTokenSource(&fakeTokens{err: tc.err}))
			_, err := c.Status(context.Background(), srv.URL+"/fhir/$job?id=1")
			var pe *Error
			if !errors.As(err, &pe) || pe.Kind != tc.kind || pe.Retryable != tc.retryable {
				t.Fatalf("err = %v, want %s retryable=%v", err, tc.kind, tc.retryable)
			}
			if !errors.Is(err, tc.err) {
				t.Error("the token source's error is not wrapped")
			}
		})
	}
}
