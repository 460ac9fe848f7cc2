package pathling

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

const srcURL = "https://source.example.com/fhir"

func TestKickOffValidationMessages(t *testing.T) {
	h := scriptedHarness(t, Config{})
	good := urlParam(srcURL)
	cases := []struct {
		name   string
		header func(http.Header)
		body   []byte
		status int
		diag   string
	}{
		{name: "missing exportUrl", body: body(codeParam("saveMode", "merge")), status: 400,
			diag: "Missing required parameter: exportUrl"},
		{name: "exportUrl as valueUri", body: body(typedParam("exportUrl", "Uri", srcURL)), status: 400,
			diag: "Missing required parameter: exportUrl"},
		{name: "exportUrl as valueString", body: body(strParam("exportUrl", srcURL)), status: 400,
			diag: "Missing required parameter: exportUrl"},
		{name: "first exportUrl decides", body: body(typedParam("exportUrl", "Uri", srcURL), good), status: 400,
			diag: "Missing required parameter: exportUrl"},
		{name: "empty exportUrl", body: body(urlParam("")), status: 400, diag: "exportUrl must not be null"},
		{name: "saveMode wrong case", body: body(good, codeParam("saveMode", "MERGE")), status: 400,
			diag: "Unknown saveMode."},
		{name: "saveMode as valueString", body: body(good, strParam("saveMode", "merge")), status: 400,
			diag: "Unknown saveMode."},
		{name: "saveMode as valueCoding", body: body(good, param{"name": "saveMode", "valueCoding": map[string]string{"code": "merge"}}),
			status: 400, diag: "Unknown saveMode."},
		{name: "exportType unknown", body: body(good, codeParam("exportType", "foo")), status: 400,
			diag: "Invalid exportType: foo. Must be 'dynamic' or 'static'."},
		{name: "exportType as valueString", body: body(good, strParam("exportType", "dynamic")), status: 400,
			diag: "Invalid exportType"},
		{name: "inputFormat unknown", body: body(good, codeParam("inputFormat", "text/csv")), status: 400,
			diag: "Unsupported format: text/csv"},
		{name: "inputFormat as valueString", body: body(good, strParam("inputFormat", "application/fhir+ndjson")), status: 400,
			diag: "Unknown format."},
		{name: "exportUrl not allowed", body: body(urlParam("https://evil.example.com/fhir")), status: 400,
			diag: "exportUrl not in allowableExportUrls: https://evil.example.com/fhir"},
		{name: "allowlist host confusion", body: body(urlParam("https://source.example.com.evil.com/fhir")), status: 400,
			diag: "exportUrl not in allowableExportUrls: https://source.example.com.evil.com/fhir"},
		{name: "allowlist userinfo", body: body(urlParam("https://source.example.com@evil.com/fhir")), status: 400,
			diag: "exportUrl not in allowableExportUrls: https://source.example.com@evil.com/fhir"},
		{name: "allowlist path boundary", body: body(urlParam("https://source.example.com/fhirx")), status: 400,
			diag: "exportUrl not in allowableExportUrls: https://source.example.com/fhirx"},
		{name: "Accept missing", header: func(h http.Header) { h.Del("Accept") }, body: body(good), status: 400,
			diag: "Unknown 'Accept' header value 'null'. Only [application/fhir+json, */*] are allowed."},
		{name: "Accept with charset", header: func(h http.Header) { h.Set("Accept", "application/fhir+json; charset=utf-8") },
			body: body(good), status: 400,
			diag: "Unknown 'Accept' header value 'application/fhir+json; charset=utf-8'. Only [application/fhir+json, */*] are allowed."},
		{name: "Accept application/json", header: func(h http.Header) { h.Set("Accept", "application/json") },
			body: body(good), status: 400,
			diag: "Unknown 'Accept' header value 'application/json'. Only [application/fhir+json, */*] are allowed."},
		{name: "Prefer missing", header: func(h http.Header) { h.Del("Prefer") }, body: body(good), status: 400,
			diag: "Unknown 'Prefer' header value '[]'. Only [respond-async] is allowed."},
		{name: "Prefer wrong", header: func(h http.Header) { h.Set("Prefer", "respond-sync") }, body: body(good), status: 400,
			diag: "Unknown 'Prefer' header value '[respond-sync]'. Only [respond-async] is allowed."},
		{name: "Content-Type missing", header: func(h http.Header) { h.Del("Content-Type") }, body: body(good), status: 400,
			diag: `No Content-Type header was provided in the request. This is required for "EXTENDED_OPERATION_SERVER" operation`},
		{name: "not JSON", body: []byte("exportUrl=x"), status: 400,
			diag: "Failed to parse request body as JSON resource. Error was: Failed to parse JSON encoded FHIR content: invalid character 'e' looking for beginning of value"},
		{name: "not Parameters", body: []byte(`{"resourceType":"Patient"}`), status: 400,
			diag: `Incorrect resource type found, expected "Parameters" but found "Patient"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := kickOffHeaders()
			if tc.header != nil {
				tc.header(hdr)
			}
			wantError(t, h.kickOff(t, hdr, tc.body), tc.status, tc.diag)
		})
	}
	if c := h.emu.Counters(); c.JobsCreated != 0 || c.Rejected != len(cases) || c.KickOffs != len(cases) {
		t.Fatalf("counters after rejections: %+v", c)
	}
}

func TestKickOffAcceptsTokens(t *testing.T) {
	h := scriptedHarness(t, Config{})
	for _, accept := range []string{"application/fhir+json", "*/*", "text/html, application/fhir+json", "application/json,*/*"} {
		hdr := kickOffHeaders()
		hdr.Set("Accept", accept)
		if r := h.kickOff(t, hdr, body(urlParam(srcURL))); r.status != http.StatusAccepted {
			t.Errorf("Accept %q: want 202, got %s", accept, r)
		}
	}
	for _, prefer := range [][]string{{"respond-async"}, {"handling=lenient, respond-async"}, {"handling=lenient", "respond-async"}} {
		hdr := kickOffHeaders()
		hdr["Prefer"] = prefer
		if r := h.kickOff(t, hdr, body(urlParam(srcURL))); r.status != http.StatusAccepted {
			t.Errorf("Prefer %q: want 202, got %s", prefer, r)
		}
	}
	hdr := kickOffHeaders()
	hdr.Set("Content-Type", "application/json")
	if r := h.kickOff(t, hdr, body(urlParam(srcURL))); r.status != http.StatusAccepted {
		t.Errorf("Content-Type application/json: want 202, got %s", r)
	}
}

func TestKickOffPolicy(t *testing.T) {
	t.Run("empty allowlist rejects everything", func(t *testing.T) {
		h := newHarness(t, Config{Mode: ModeScripted, AllowInsecureURLs: true, AllowInternalURLs: true})
		wantError(t, h.kickOff(t, kickOffHeaders(), body(urlParam(srcURL))), 400,
			"No trusted export URLs are configured. Set pathling.import.pnp.allowableExportUrls to enable $import-pnp.")
	})
	t.Run("plain http refused", func(t *testing.T) {
		h := newHarness(t, Config{Mode: ModeScripted, AllowableExportURLs: []string{"http://source.example.com"}, AllowInternalURLs: true})
		wantError(t, h.kickOff(t, kickOffHeaders(), body(urlParam("http://source.example.com/fhir"))), 400,
			"exportUrl must use https (set pathling.allowInsecureUrls to allow http): http://source.example.com/fhir")
	})
	t.Run("internal address refused", func(t *testing.T) {
		h := newHarness(t, Config{Mode: ModeScripted, AllowableExportURLs: []string{"https://127.0.0.1:8443", "https://localhost:8443"}, AllowInsecureURLs: true})
		wantError(t, h.kickOff(t, kickOffHeaders(), body(urlParam("https://127.0.0.1:8443/fhir"))), 400,
			"exportUrl points to an internal address: 127.0.0.1")
		wantError(t, h.kickOff(t, kickOffHeaders(), body(urlParam("https://localhost:8443/fhir"))), 400,
			"exportUrl points to an internal address: localhost")
	})
	t.Run("allowlist matches host case-insensitively and default port", func(t *testing.T) {
		h := scriptedHarness(t, Config{AllowableExportURLs: []string{"https://Source.Example.com:443/fhir/"}})
		for _, u := range []string{"https://source.example.com/fhir", "https://SOURCE.example.com/fhir/$export"} {
			if r := h.kickOff(t, kickOffHeaders(), body(urlParam(u))); r.status != http.StatusAccepted {
				t.Errorf("%s: want 202, got %s", u, r)
			}
		}
	})
}

// Each fix reveals the next check: body parameters, exportUrl policy, Accept, Prefer.
func TestKickOffCheckOrder(t *testing.T) {
	h := scriptedHarness(t, Config{})
	hdr := kickOffHeaders()
	hdr.Del("Accept")
	hdr.Del("Prefer")
	bad := urlParam("https://evil.example.com/fhir")
	wantError(t, h.kickOff(t, hdr, body(bad, codeParam("saveMode", "bogus"))), 400, "Unknown saveMode.")
	wantError(t, h.kickOff(t, hdr, body(bad)), 400, "exportUrl not in allowableExportUrls: https://evil.example.com/fhir")
	wantError(t, h.kickOff(t, hdr, body(urlParam(srcURL))), 400,
		"Unknown 'Accept' header value 'null'. Only [application/fhir+json, */*] are allowed.")
	hdr.Set("Accept", "application/fhir+json")
	wantError(t, h.kickOff(t, hdr, body(urlParam(srcURL))), 400,
		"Unknown 'Prefer' header value '[]'. Only [respond-async] is allowed.")
	hdr.Set("Prefer", "respond-async")
	if r := h.kickOff(t, hdr, body(urlParam(srcURL))); r.status != http.StatusAccepted {
		t.Fatalf("want 202, got %s", r)
	}
}

var contentLocationPattern = regexp.MustCompile(`^http://127\.0\.0\.1:\d+/fhir/\$job\?id=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestKickOffAccepted(t *testing.T) {
	h := scriptedHarness(t, Config{})
	r := h.kickOff(t, kickOffHeaders(), body(urlParam(srcURL), codeParam("saveMode", "overwrite")))
	if r.status != http.StatusAccepted {
		t.Fatalf("want 202, got %s", r)
	}
	if loc := r.header.Get("Content-Location"); !contentLocationPattern.MatchString(loc) {
		t.Fatalf("Content-Location %q is not an absolute $job URL with a lower-case uuid4", loc)
	}
	if etag := r.header.Get("ETag"); !strings.HasPrefix(etag, `W/"`) {
		t.Fatalf("ETag %q is not weak", etag)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeFHIRJSON {
		t.Fatalf("Content-Type %q", ct)
	}
	want := `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job accepted for processing, see the Content-Location header for the URL at which status can be queried"}]}`
	if string(r.body) != want {
		t.Fatalf("body\n got: %s\nwant: %s", r.body, want)
	}
	if r.header.Get("Retry-After") != "" {
		t.Fatal("kick-off must not send Retry-After")
	}
}

func TestKickOffForwardedHeaders(t *testing.T) {
	h := scriptedHarness(t, Config{})
	hdr := kickOffHeaders()
	hdr.Set("X-Forwarded-Host", "pathling.example.org")
	hdr.Set("X-Forwarded-Proto", "https")
	loc := h.mustKickOff(t, hdr, body(urlParam(srcURL)))
	if !strings.HasPrefix(loc, "https://pathling.example.org/fhir/$job?id=") {
		t.Fatalf("Content-Location %q ignores X-Forwarded-*", loc)
	}
}

func TestJavaErrorPrefix(t *testing.T) {
	h := scriptedHarness(t, Config{JavaErrorPrefix: true})
	wantError(t, h.kickOff(t, kickOffHeaders(), body(codeParam("saveMode", "merge"))), 400,
		"au.csiro.pathling.errors.InvalidUserInputError: Missing required parameter: exportUrl")
	// Header checks are plain InvalidRequestExceptions: no prefix.
	hdr := kickOffHeaders()
	hdr.Del("Prefer")
	wantError(t, h.kickOff(t, hdr, body(urlParam(srcURL))), 400,
		"Unknown 'Prefer' header value '[]'. Only [respond-async] is allowed.")
	if err := h.emu.SetDefaultScript(Script{Outcome: OutcomeFail}); err != nil {
		t.Fatal(err)
	}
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	wantError(t, poll(t, loc, nil), 400,
		"au.csiro.pathling.errors.InvalidUserInputError: Ping and pull import failed: No files with extension .ndjson were downloaded")
}

// The parameters Pathling silently drops never reach the source.
func TestSilentDropsReachTheSource(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{"Patient": {patients("p1")}})
	h := pullHarness(t, fs, Config{})
	loc := h.mustKickOff(t, kickOffHeaders(), body(
		urlParam(fs.base()),
		param{"name": "_since", "valueDateTime": "2025-01-01T00:00:00Z"}, // ignored: not an instant
		instParam("_until", "2025-02-01T00:00:00+01:00"),
		strParam("_type", "Patient"),
		codeParam("_type", "Observation"),
		typedParam("_type", "Uri", "Condition"),                        // dropped
		strParam("includeAssociatedData", "LatestProvenanceResources"), // dropped: needs valueCode
		codeParam("includeAssociatedData", "RelevantProvenanceResources"),
		strParam("_typeFilter", "Patient?active=true"),
		codeParam("mode", "overwrite"), // unknown: ignored
		strParam("_outputFormat", "ndjson"),
	))
	if r := pollUntilDone(t, loc, nil); r.status != http.StatusOK {
		t.Fatalf("want 200, got %s", r)
	}
	k := fs.lastKickOff(t)
	if k.path != "/fhir/$export" {
		t.Fatalf("export path %q", k.path)
	}
	if _, ok := k.query["_since"]; ok {
		t.Fatalf("a valueDateTime _since must be ignored, source got %q", k.rawQuery)
	}
	want := map[string]string{
		"_outputFormat":         "application/fhir+ndjson",
		"_type":                 "Patient,Observation",
		"_until":                "2025-01-31T23:00:00.000Z",
		"includeAssociatedData": "RelevantProvenanceResources",
		"_typeFilter":           "Patient?active=true",
	}
	for k2, v := range want {
		if got := k.query.Get(k2); got != v {
			t.Errorf("%s = %q, want %q (query %s)", k2, got, v, k.rawQuery)
		}
	}
	if len(k.query) != len(want) {
		t.Errorf("unexpected parameters in %s", k.rawQuery)
	}
	if k.header.Get("Accept") != "application/fhir+json" || k.header.Get("Prefer") != "respond-async" {
		t.Errorf("kick-off headers: %v", k.header)
	}

	// A valueInstant _since is passed on in fhir-bulk-java's format.
	loc = h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base()), instParam("_since", "2025-01-01T00:00:00Z")))
	pollUntilDone(t, loc, nil)
	if got := fs.lastKickOff(t).query.Get("_since"); got != "2025-01-01T00:00:00.000Z" {
		t.Fatalf("_since = %q", got)
	}
}

// A user who passes .../fhir/$export gets .../$export/$export requested, as with Pathling.
func TestExportURLIsTreatedAsBase(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{"Patient": {patients("p1")}})
	h := pullHarness(t, fs, Config{})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base()+"/$export")))
	pollUntilDone(t, loc, nil)
	if p := fs.lastKickOff(t).path; p != "/fhir/$export/$export" {
		t.Fatalf("source saw path %q", p)
	}
}
