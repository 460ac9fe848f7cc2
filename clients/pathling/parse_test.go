package pathling

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseOperationOutcome(t *testing.T) {
	oo, err := ParseOperationOutcome([]byte(`{"resourceType":"OperationOutcome","issue":[` +
		`{"severity":"error","code":"processing","diagnostics":"au.csiro.pathling.errors.InvalidUserInputError: Missing required parameter: exportUrl"},` +
		`{"severity":"warning","code":"informational","details":{"text":"from details"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &OperationOutcome{Issues: []Issue{
		{Severity: "error", Code: "processing", Diagnostics: "au.csiro.pathling.errors.InvalidUserInputError: Missing required parameter: exportUrl"},
		{Severity: "warning", Code: "informational", Diagnostics: "from details"},
	}}
	if !reflect.DeepEqual(oo, want) {
		t.Errorf("got %+v\nwant %+v", oo, want)
	}
	if d := oo.Diagnostics(); d != "Missing required parameter: exportUrl" {
		t.Errorf("Diagnostics() = %q (error issues only, prefix stripped)", d)
	}

	for _, bad := range []string{``, `null`, `[]`, `"x"`, `{}`, `{"resourceType":"Parameters"}`, `{"resourceType":"OperationOutcome","issue":{}}`} {
		if _, err := ParseOperationOutcome([]byte(bad)); err == nil {
			t.Errorf("ParseOperationOutcome(%q): want an error", bad)
		}
	}
}

func TestOperationOutcomeJSON(t *testing.T) {
	oo := OperationOutcome{Issues: []Issue{{Severity: "error", Code: "processing", Diagnostics: "a <b> & c"}}}
	b, err := json.Marshal(oo)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `{"resourceType":"OperationOutcome","issue":[{"severity":"error"`) {
		t.Errorf("not FHIR JSON: %s", b)
	}
	var back OperationOutcome
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, oo) {
		t.Errorf("round trip: %+v != %+v", back, oo)
	}
	// Embedded in an event body, as a pointer.
	wrapped, _ := json.Marshal(struct {
		Outcome *OperationOutcome `json:"operationOutcome,omitempty"`
	}{&oo})
	if !strings.Contains(string(wrapped), `"operationOutcome":{"resourceType":"OperationOutcome"`) {
		t.Errorf("pointer marshal: %s", wrapped)
	}
}

func TestStripJavaClassPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"au.csiro.pathling.errors.InvalidUserInputError: Unknown saveMode.":                 "Unknown saveMode.",
		"java.lang.RuntimeException: au.csiro.pathling.errors.AccessDeniedError: Missing x": "Missing x",
		"Ping and pull import failed: No files":                                             "Ping and pull import failed: No files",
		"Job ID not found":                                                                  "Job ID not found",
		"Outer$Inner: x":                                                                    "Outer$Inner: x",
		"a.b.Outer$Inner: x":                                                                "x",
		"":                                                                                  "",
	} {
		if got := StripJavaClassPrefix(in); got != want {
			t.Errorf("StripJavaClassPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseImportResult(t *testing.T) {
	tt := time.Date(2026, 3, 1, 10, 20, 30, 123000000, time.UTC)
	for _, tc := range []struct {
		name, body, contentType string
		want                    *ImportResult
	}{
		{"Parameters, valueString time", parametersResult, "application/fhir+json;charset=UTF-8", &ImportResult{
			TransactionTime: tt, TransactionTimeRaw: "2026-03-01T10:20:30.123Z", Request: "http://pathling:8080/fhir/$import-pnp",
			Outputs: []string{"file:///staging/a/Patient.0000.ndjson", "file:///staging/a/Observation.0000.ndjson"}}},
		{"Parameters, valueInstant time, valueUri output, no outputs", `{"resourceType":"Parameters","parameter":[` +
			`{"name":"transactionTime","valueInstant":"2026-03-01T11:20:30.123+01:00"},{"name":"request","valueUri":"r"},` +
			`{"name":"ignored","valueString":"x"}]}`, "", &ImportResult{
			TransactionTime: tt, TransactionTimeRaw: "2026-03-01T11:20:30.123+01:00", Request: "r"}},
		{"Parameters, output valueUri", `{"resourceType":"Parameters","parameter":[{"name":"output","part":[{"name":"other","valueString":"x"},{"name":"inputUrl","valueUri":"u1"}]}]}`,
			"application/fhir+json", &ImportResult{Outputs: []string{"u1"}}},
		{"plain, output object", `{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r","output":{"inputUrl":"u1"}}`,
			"application/json", &ImportResult{TransactionTime: tt, TransactionTimeRaw: "2026-03-01T10:20:30.123Z", Request: "r", Outputs: []string{"u1"}}},
		{"plain, output array", `{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r","output":[{"inputUrl":"u1"},{"inputUrl":"u2"}]}`,
			"application/json; charset=utf-8", &ImportResult{TransactionTime: tt, TransactionTimeRaw: "2026-03-01T10:20:30.123Z", Request: "r", Outputs: []string{"u1", "u2"}}},
		{"plain, no output", `{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r"}`, "application/json",
			&ImportResult{TransactionTime: tt, TransactionTimeRaw: "2026-03-01T10:20:30.123Z", Request: "r"}},
		{"plain, Java-style offset", `{"transactionTime":"2026-03-01T10:20:30.123+0000"}`, "",
			&ImportResult{TransactionTime: tt, TransactionTimeRaw: "2026-03-01T10:20:30.123+0000"}},
		{"unparsable time kept raw", `{"transactionTime":"yesterday"}`, "", &ImportResult{TransactionTimeRaw: "yesterday"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseImportResult([]byte(tc.body), tc.contentType)
			if err != nil {
				t.Fatal(err)
			}
			if !resultsEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ body, contentType string }{
		{``, ""},
		{`[]`, ""},
		{`not json`, "application/json"},
		{`{"resourceType":"OperationOutcome","issue":[]}`, "application/fhir+json"},
		{`{"transactionTime":"x"}`, "text/html"},
		{`{"output":"u1"}`, ""},
		{`{"transactionTime":5}`, ""},
	} {
		if _, err := ParseImportResult([]byte(tc.body), tc.contentType); err == nil {
			t.Errorf("ParseImportResult(%q, %q): want an error", tc.body, tc.contentType)
		}
	}
}

func TestNormalizeExportURL(t *testing.T) {
	for _, tc := range []struct {
		in, base, endpoint string
	}{
		{"https://source.example.com/fhir", "https://source.example.com/fhir", "https://source.example.com/fhir/$export"},
		{"https://source.example.com/fhir/", "https://source.example.com/fhir", "https://source.example.com/fhir/$export"},
		{"https://source.example.com/fhir/$export", "https://source.example.com/fhir", "https://source.example.com/fhir/$export"},
		{"https://source.example.com/fhir/%24export", "https://source.example.com/fhir", "https://source.example.com/fhir/$export"},
		{"https://source.example.com/fhir/$export/", "https://source.example.com/fhir", "https://source.example.com/fhir/$export"},
		{"  HTTPS://Source.Example.com:8443/r4/fhir/$export ", "https://source.example.com:8443/r4/fhir", "https://source.example.com:8443/r4/fhir/$export"},
		{"http://source/$export", "http://source", "http://source/$export"},
		{"http://source", "http://source", "http://source/$export"},
		{"https://s/a%20b/fhir", "https://s/a%20b/fhir", "https://s/a%20b/fhir/$export"},
	} {
		if got, err := NormalizeExportURL(tc.in, ExportURLBase); err != nil || got != tc.base {
			t.Errorf("base(%q) = %q, %v; want %q", tc.in, got, err, tc.base)
		}
		if got, err := NormalizeExportURL(tc.in, ExportURLEndpoint); err != nil || got != tc.endpoint {
			t.Errorf("endpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.endpoint)
		}
	}
	for _, bad := range []string{
		"", "source/fhir", "/fhir", "ftp://s/fhir", "https://user:pw@s/fhir", "https://s/fhir#x", "https://s/fhir#",
		"https://s/fhir/$export?_type=Patient", "https://s/fhir?", "https:///fhir", "mailto:a@b", "http://[::1",
	} {
		if _, err := NormalizeExportURL(bad, ExportURLBase); !errors.Is(err, ErrInvalidExportURL) {
			t.Errorf("NormalizeExportURL(%q): err = %v, want ErrInvalidExportURL", bad, err)
		}
	}
	// Normalising is idempotent and the two styles convert into each other.
	for _, in := range []string{"https://s/fhir", "https://s/fhir/$export"} {
		b1, _ := NormalizeExportURL(in, ExportURLBase)
		e1, _ := NormalizeExportURL(b1, ExportURLEndpoint)
		b2, _ := NormalizeExportURL(e1, ExportURLBase)
		if b1 != b2 {
			t.Errorf("%q: base %q -> endpoint %q -> base %q", in, b1, e1, b2)
		}
	}
}

// The port normalises in the style the client was configured with.
func TestPortNormalizesInTheClientsStyle(t *testing.T) {
	for style, want := range map[ExportURLStyle]string{ExportURLBase: "https://s/fhir", ExportURLEndpoint: "https://s/fhir/$export"} {
		c, err := New("http://p/fhir", WithExportURLStyle(style))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := NewPort(c).NormalizeExportURL("https://s/fhir/"); err != nil || got != want {
			t.Errorf("style %d: %q, %v; want %q", style, got, err, want)
		}
		if _, err := NewPort(c).NormalizeExportURL("ftp://s/fhir"); !errors.Is(err, ErrInvalidExportURL) {
			t.Errorf("style %d: err = %v, want ErrInvalidExportURL", style, err)
		}
	}
	if _, err := New("http://p/fhir", WithExportURLStyle(ExportURLStyle(7))); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("unknown style: err = %v, want ErrInvalidOption", err)
	}
}

func TestErrorSentinels(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	err := error(&Error{Op: "status", Kind: KindUnavailable, Retryable: true, Message: "request failed", Err: cause})
	wrapped := errors.Join(errors.New("context"), err)
	if !errors.Is(wrapped, ErrUnavailable) || errors.Is(wrapped, ErrJobLost) || !errors.Is(wrapped, cause) {
		t.Error("errors.Is does not match by Kind through wrapping")
	}
	if got := err.Error(); got != "pathling: status: unavailable: request failed: dial tcp: refused" {
		t.Errorf("Error() = %q", got)
	}
	withStatus := &Error{Op: "kick-off", Kind: KindRejected, HTTPStatus: 400, Message: "Unknown saveMode."}
	if got := withStatus.Error(); got != "pathling: kick-off: rejected (HTTP 400): Unknown saveMode." {
		t.Errorf("Error() = %q", got)
	}
	sentinels := map[Kind]error{
		KindRejected: ErrRejected, KindImportFailed: ErrImportFailed, KindEmptyExport: ErrEmptyExport,
		KindUnauthorized: ErrUnauthorized, KindForbidden: ErrForbidden, KindUnavailable: ErrUnavailable,
		KindJobLost: ErrJobLost, KindProtocol: ErrProtocol,
	}
	for kind, sentinel := range sentinels {
		for other, otherSentinel := range sentinels {
			if got := errors.Is(&Error{Kind: kind}, otherSentinel); got != (kind == other) {
				t.Errorf("errors.Is(%s, Err for %s) = %v", kind, other, got)
			}
		}
		if !strings.Contains(sentinel.Error(), string(kind)) {
			t.Errorf("sentinel text %q", sentinel.Error())
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		"12":                            12 * time.Second,
		" 3 ":                           3 * time.Second,
		"soon":                          0,
		"Thu, 01 Jan 2026 00:01:00 GMT": time.Minute,
		"Wed, 31 Dec 2025 23:59:00 GMT": 0,
		"99999999999999999999":          0, // overflows int64: ignored
		"9999999999999":                 time.Duration(int64(1<<63-1)/int64(time.Second)) * time.Second,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNew(t *testing.T) {
	c, err := New("http://pathling:8080/fhir/")
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "http://pathling:8080/fhir" || c.kickOffURL != "http://pathling:8080/fhir/$import-pnp" {
		t.Errorf("base %q, kick-off %q", c.BaseURL(), c.kickOffURL)
	}
	for _, bad := range []string{"", "pathling:8080/fhir", "/fhir", "ftp://p/fhir", "http://u:p@p/fhir", "http://p/fhir?x=1", "http://p/fhir#f"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q): want an error", bad)
		}
	}
	for _, opt := range []Option{WithHTTPClient(nil), WithTokenSource(nil), WithRequestTimeout(0), WithUserAgent("")} {
		if _, err := New("http://p/fhir", opt); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("err = %v, want ErrInvalidOption", err)
		}
	}
}
