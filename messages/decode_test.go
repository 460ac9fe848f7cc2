package messages_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

const allFields = "exportUrl, saveMode, types, since, until, typeFilters, elements, includeAssociatedData, " +
	"concurrency, timeout, correlationId, requestedBy"

// TestDecodeRequestedRejects covers every validation rule with its exact message.
func TestDecodeRequestedRejects(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string // field of the first problem
		want  string // the whole error text
	}{
		// The body as a whole.
		{"empty", ``, "", `body is empty`},
		{"whitespace only", " \n\t\r ", "", `body is empty`},
		{"too large", `{"requestedBy":"` + strings.Repeat("a", messages.MaxRequestBytes) + `"}`, "",
			`body is 65554 bytes, more than the limit of 65536`},
		{"not UTF-8", "{\"requestedBy\":\"\xff\"}", "", `body is not valid UTF-8`},
		{"array", `[]`, "", `body is not a JSON object`},
		{"null", `null`, "", `body is not a JSON object`},
		{"string", `"merge"`, "", `body is not a JSON object`},
		{"truncated", `{"saveMode":"merge"`, "", `body is not valid JSON: it ends too early`},
		{"missing colon", `{"saveMode" "merge"}`, "", `body is not valid JSON: expected colon after object key at byte 12`},
		{"trailing comma", `{"saveMode":"merge",}`, "", `body is not valid JSON: invalid character '}' looking for beginning of object key string at byte 20`},
		{"bare word", `{"since": 2025-01-01}`, "", `body is not valid JSON: invalid character '-' after object key:value pair at byte 14`},
		{"second object", `{} {}`, "", `body has data after the JSON object`},
		{"trailing garbage", `{"saveMode":"merge"}x`, "", `body has data after the JSON object`},

		// Field names and JSON types.
		{"unknown field", `{"mode":"merge"}`, "mode", `mode: unknown field (the fields are ` + allFields + `)`},
		{"field in other case", `{"SaveMode":"merge"}`, "SaveMode", `SaveMode: unknown field (the fields are ` + allFields + `)`},
		{"unknown field with odd name", `{"a b\n":1}`, `"a b\n"`, `"a b\n": unknown field (the fields are ` + allFields + `)`},
		{"unknown field with long name", `{"` + strings.Repeat("k", 100) + `":1}`, `"` + strings.Repeat("k", 80) + `"…`,
			`"` + strings.Repeat("k", 80) + `"…: unknown field (the fields are ` + allFields + `)`},
		{"repeated field", `{"saveMode":"merge","saveMode":"append"}`, "saveMode", `saveMode: appears more than once`},
		{"number for string", `{"saveMode":1}`, "saveMode", `saveMode: expected a string, got number`},
		{"null for string", `{"saveMode":null}`, "saveMode", `saveMode: expected a string, got null`},
		{"boolean for string", `{"timeout":true}`, "timeout", `timeout: expected a string, got boolean`},
		{"object for string", `{"since":{}}`, "since", `since: expected a string, got object`},
		{"string for list", `{"types":"Patient"}`, "types", `types: expected an array of strings, got string`},
		{"null for list", `{"elements":null}`, "elements", `elements: expected an array of strings, got null`},
		{"number in list", `{"types":["Patient",3]}`, "types[1]", `types[1]: expected a string, got number`},
		{"null in list", `{"typeFilters":[null]}`, "typeFilters[0]", `typeFilters[0]: expected a string, got null`},

		// exportUrl.
		{"export URL ftp", `{"exportUrl":"ftp://s.example/fhir"}`, "exportUrl", `exportUrl: "ftp://s.example/fhir" is not an absolute http(s) URL`},
		{"export URL relative", `{"exportUrl":"/fhir"}`, "exportUrl", `exportUrl: "/fhir" is not an absolute http(s) URL`},
		{"export URL no host", `{"exportUrl":"https:///fhir"}`, "exportUrl", `exportUrl: "https:///fhir" is not an absolute http(s) URL`},
		{"export URL port only", `{"exportUrl":"https://:8080/fhir"}`, "exportUrl", `exportUrl: "https://:8080/fhir" is not an absolute http(s) URL`},
		{"export URL opaque", `{"exportUrl":"https:s.example"}`, "exportUrl", `exportUrl: "https:s.example" is not an absolute http(s) URL`},
		{"export URL space", `{"exportUrl":"https://s.example/my fhir"}`, "exportUrl", `exportUrl: "https://s.example/my fhir" is not an absolute http(s) URL`},
		{"export URL empty", `{"exportUrl":""}`, "exportUrl", `exportUrl: "" is not an absolute http(s) URL`},
		{"export URL user info", `{"exportUrl":"https://user:s3cret@s.example/fhir"}`, "exportUrl", `exportUrl: "https://s.example/fhir" must not contain user info (shown without it)`},
		{"export URL user info and bad scheme", `{"exportUrl":"ftp://user:s3cret@s.example/fhir"}`, "exportUrl", `exportUrl: "ftp://s.example/fhir" is not an absolute http(s) URL`},
		{"export URL query", `{"exportUrl":"https://s.example/fhir?_type=Patient"}`, "exportUrl", `exportUrl: "https://s.example/fhir" must not contain a query or fragment (shown without them)`},
		{"export URL empty query", `{"exportUrl":"https://s.example/fhir?"}`, "exportUrl", `exportUrl: "https://s.example/fhir" must not contain a query or fragment (shown without them)`},
		{"export URL fragment", `{"exportUrl":"https://s.example/fhir#x"}`, "exportUrl", `exportUrl: "https://s.example/fhir" must not contain a query or fragment (shown without them)`},

		// saveMode.
		{"save mode typo", `{"saveMode":"merj"}`, "saveMode", `saveMode: "merj" is not one of merge, overwrite, append, ignore, error`},
		{"save mode case", `{"saveMode":"Merge"}`, "saveMode", `saveMode: "Merge" is not one of merge, overwrite, append, ignore, error`},
		{"save mode empty", `{"saveMode":""}`, "saveMode", `saveMode: "" is not one of merge, overwrite, append, ignore, error`},

		// types.
		{"type lower case", `{"types":["Patient","patient"]}`, "types[1]", `types[1]: "patient" is not a FHIR resource type name`},
		{"type one letter", `{"types":["P"]}`, "types[0]", `types[0]: "P" is not a FHIR resource type name`},
		{"types comma joined", `{"types":["Patient,Observation"]}`, "types[0]", `types[0]: "Patient,Observation" is not a FHIR resource type name`},
		{"type too long", `{"types":["P` + strings.Repeat("a", 64) + `"]}`, "types[0]", `types[0]: "P` + strings.Repeat("a", 64) + `" is not a FHIR resource type name`},
		{"type empty", `{"types":[""]}`, "types[0]", `types[0]: "" is not a FHIR resource type name`},
		{"type repeated", `{"types":["Patient","Observation","Patient"]}`, "types[2]", `types[2]: "Patient" is listed more than once`},

		// since and until.
		{"since bad month", `{"since":"2025-13-01"}`, "since", `since: "2025-13-01" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since date only", `{"since":"2025-01-01"}`, "since", `since: "2025-01-01" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since no seconds", `{"since":"2025-01-01T00:00Z"}`, "since", `since: "2025-01-01T00:00Z" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since no zone", `{"since":"2025-01-01T00:00:00"}`, "since", `since: "2025-01-01T00:00:00" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since lower-case z", `{"since":"2025-01-01T00:00:00z"}`, "since", `since: "2025-01-01T00:00:00z" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since impossible day", `{"since":"2025-02-30T00:00:00Z"}`, "since", `since: "2025-02-30T00:00:00Z" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since leap second", `{"since":"2016-12-31T23:59:60Z"}`, "since", `since: "2016-12-31T23:59:60Z" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since ten fraction digits", `{"since":"2025-01-01T00:00:00.1234567890Z"}`, "since", `since: "2025-01-01T00:00:00.1234567890Z" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since offset too large", `{"since":"2025-01-01T00:00:00+15:00"}`, "since", `since: "2025-01-01T00:00:00+15:00" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since AUTO", `{"since":"AUTO"}`, "since", `since: "AUTO" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"since empty", `{"since":""}`, "since", `since: "" is not an instant (RFC 3339 with time zone) or "auto"`},
		{"until not instant", `{"until":"yesterday"}`, "until", `until: "yesterday" is not an instant (RFC 3339 with time zone)`},
		{"until auto", `{"until":"auto"}`, "until", `until: "auto" is not an instant (RFC 3339 with time zone)`},
		{"until equals since", `{"since":"2025-01-01T00:00:00Z","until":"2025-01-01T01:00:00+01:00"}`, "until",
			`until: "2025-01-01T01:00:00+01:00" is not after since "2025-01-01T00:00:00Z"`},
		{"until before since", `{"since":"2025-02-01T00:00:00Z","until":"2025-01-01T00:00:00Z"}`, "until",
			`until: "2025-01-01T00:00:00Z" is not after since "2025-02-01T00:00:00Z"`},

		// typeFilters, elements, includeAssociatedData.
		{"type filter without type", `{"typeFilters":["status=active"]}`, "typeFilters[0]", `typeFilters[0]: "status=active" is not of the form <ResourceType>?<search parameters>`},
		{"type filter without parameters", `{"typeFilters":["Observation?"]}`, "typeFilters[0]", `typeFilters[0]: "Observation?" is not of the form <ResourceType>?<search parameters>`},
		{"type filter empty", `{"typeFilters":[""]}`, "typeFilters[0]", `typeFilters[0]: "" is not of the form <ResourceType>?<search parameters>`},
		{"type filter comma", `{"typeFilters":["Observation?code=a,b"]}`, "typeFilters[0]", `typeFilters[0]: "Observation?code=a,b" contains a comma, which Pathling would read as a list separator`},
		{"element path", `{"elements":["Patient.name.given"]}`, "elements[0]", `elements[0]: "Patient.name.given" is not an element name ([ResourceType.]element)`},
		{"element capitalised", `{"elements":["id","Name"]}`, "elements[1]", `elements[1]: "Name" is not an element name ([ResourceType.]element)`},
		{"element empty", `{"elements":[""]}`, "elements[0]", `elements[0]: "" is not an element name ([ResourceType.]element)`},
		{"associated data space", `{"includeAssociatedData":["a b"]}`, "includeAssociatedData[0]", `includeAssociatedData[0]: "a b" is not a code (no spaces or commas)`},
		{"associated data comma", `{"includeAssociatedData":["a,b"]}`, "includeAssociatedData[0]", `includeAssociatedData[0]: "a,b" is not a code (no spaces or commas)`},
		{"associated data empty", `{"includeAssociatedData":[""]}`, "includeAssociatedData[0]", `includeAssociatedData[0]: "" is not a code (no spaces or commas)`},

		// concurrency and timeout.
		{"concurrency unknown", `{"concurrency":"parallel"}`, "concurrency", `concurrency: "parallel" is not one of forbid, queue`},
		{"concurrency empty", `{"concurrency":""}`, "concurrency", `concurrency: "" is not one of forbid, queue`},
		{"timeout words", `{"timeout":"2 hours"}`, "timeout", `timeout: "2 hours" is not a duration (e.g. "90m", "2h")`},
		{"timeout days", `{"timeout":"7d"}`, "timeout", `timeout: "7d" is not a duration (e.g. "90m", "2h")`},
		{"timeout seconds as number string", `{"timeout":"7200"}`, "timeout", `timeout: "7200" is not a duration (e.g. "90m", "2h")`},
		{"timeout empty", `{"timeout":""}`, "timeout", `timeout: "" is not a duration (e.g. "90m", "2h")`},
		{"timeout zero", `{"timeout":"0s"}`, "timeout", `timeout: "0s" is not more than 0`},
		{"timeout negative", `{"timeout":"-1h"}`, "timeout", `timeout: "-1h" is not more than 0`},
		{"timeout too long", `{"timeout":"168h1ns"}`, "timeout", `timeout: "168h1ns" is longer than 7 days (168h)`},

		// correlationId and requestedBy.
		{"correlation id too long", `{"correlationId":"` + strings.Repeat("x", 257) + `"}`, "correlationId", `correlationId: is 257 characters long, more than the limit of 256`},
		{"requested by too long", `{"requestedBy":"` + strings.Repeat("é", 300) + `"}`, "requestedBy", `requestedBy: is 300 characters long, more than the limit of 256`},

		// Several problems at once, in field order; long values shortened.
		{"two problems", `{"concurrency":"x","saveMode":"y"}`, "saveMode",
			`saveMode: "y" is not one of merge, overwrite, append, ignore, error; concurrency: "x" is not one of forbid, queue`},
		{"unknown fields and bad type", `{"a":1,"saveMode":2,"b":3}`, "a",
			`a: unknown field (the fields are ` + allFields + `); saveMode: expected a string, got number; b: unknown field (the fields are ` + allFields + `)`},
		{"long value shortened", `{"saveMode":"` + strings.Repeat("m", 100) + `"}`, "saveMode",
			`saveMode: "` + strings.Repeat("m", 80) + `"… is not one of merge, overwrite, append, ignore, error`},
		{"many problems counted", `{"types":["a","b","c","d","e","f","g","h","i","j","k","l"]}`, "types[0]",
			`types[0]: "a" is not a FHIR resource type name; types[1]: "b" is not a FHIR resource type name; ` +
				`types[2]: "c" is not a FHIR resource type name; types[3]: "d" is not a FHIR resource type name; ` +
				`types[4]: "e" is not a FHIR resource type name; types[5]: "f" is not a FHIR resource type name; ` +
				`types[6]: "g" is not a FHIR resource type name; types[7]: "h" is not a FHIR resource type name; ` +
				`types[8]: "i" is not a FHIR resource type name; types[9]: "j" is not a FHIR resource type name; and 2 more problems`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := messages.DecodeRequested([]byte(tc.body))
			if err == nil {
				t.Fatalf("DecodeRequested(%.60q) succeeded, want %q", tc.body, tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tc.want)
			}
			if !errors.Is(err, messages.ErrInvalidRequest) {
				t.Errorf("errors.Is(err, ErrInvalidRequest) = false for %v", err)
			}
			var ve *messages.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("errors.As(err, *ValidationError) = false for %T", err)
			}
			if ve.Field != tc.field {
				t.Errorf("first problem's field = %q, want %q", ve.Field, tc.field)
			}
			var all messages.ValidationErrors
			if !errors.As(err, &all) || len(all) == 0 {
				t.Errorf("errors.As(err, ValidationErrors) = false or empty for %T", err)
			}
		})
	}
}

func TestDecodeRequestedNeverLeaksPassword(t *testing.T) {
	for _, u := range []string{
		"https://user:s3cret@s.example/fhir",
		"ftp://user:s3cret@s.example/fhir",
		"https://user:s3cret@s.example/fh ir",
		"https:user:s3cret@s.example",
		"https://user:s3cret@s.example/fhir?x=1",
		"https://user:s3cret@@s.example/fhir",
	} {
		_, err := messages.DecodeRequested([]byte(`{"exportUrl":"` + u + `"}`))
		if err == nil {
			t.Errorf("%q accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error for %q shows the password: %v", u, err)
		}
	}
}

func TestDecodeRequestedAccepts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want messages.SyncRequested
	}{
		{"empty object", `{}`, messages.SyncRequested{}},
		{"surrounding white space", " \n{}\n\t ", messages.SyncRequested{}},
		{"empty lists become nil", `{"types":[],"typeFilters":[],"elements":[],"includeAssociatedData":[]}`, messages.SyncRequested{}},
		{"contract example", `{
			"exportUrl": "https://source.example.com/fhir",
			"saveMode": "merge",
			"types": ["Patient", "Observation"],
			"since": "2025-01-01T00:00:00Z",
			"until": "2025-02-01T00:00:00Z",
			"typeFilters": [], "elements": [], "includeAssociatedData": [],
			"concurrency": "forbid",
			"timeout": "2h",
			"correlationId": "c-1", "requestedBy": "ops"
		}`, messages.SyncRequested{
			ExportURL: "https://source.example.com/fhir", SaveMode: "merge", Types: []string{"Patient", "Observation"},
			Since: "2025-01-01T00:00:00Z", Until: "2025-02-01T00:00:00Z", Concurrency: "forbid", Timeout: "2h",
			CorrelationID: "c-1", RequestedBy: "ops",
		}},
		{"export endpoint, auto, queue", `{"exportUrl":"HTTP://s.example:8443/fhir/$export","since":"auto","concurrency":"queue","until":"2025-01-01T00:00:00Z"}`,
			messages.SyncRequested{ExportURL: "HTTP://s.example:8443/fhir/$export", Since: "auto", Concurrency: "queue", Until: "2025-01-01T00:00:00Z"}},
		{"every save mode is fine: error", `{"saveMode":"error"}`, messages.SyncRequested{SaveMode: "error"}},
		{"fractions and offsets", `{"since":"2024-12-31T23:59:59.123456789+14:00","until":"2025-01-01T00:00:00.5-12:30"}`,
			messages.SyncRequested{Since: "2024-12-31T23:59:59.123456789+14:00", Until: "2025-01-01T00:00:00.5-12:30"}},
		{"filters, elements, associated data", `{"typeFilters":["MedicationRequest?status=active&intent=order"],"elements":["id","Patient.name"],"includeAssociatedData":["LatestProvenanceResources","_x"]}`,
			messages.SyncRequested{TypeFilters: []string{"MedicationRequest?status=active&intent=order"}, Elements: []string{"id", "Patient.name"}, IncludeAssociatedData: []string{"LatestProvenanceResources", "_x"}}},
		{"timeout at the limit", `{"timeout":"168h"}`, messages.SyncRequested{Timeout: "168h"}},
		{"timeout tiny", `{"timeout":"1ns"}`, messages.SyncRequested{Timeout: "1ns"}},
		{"labels at the limit", `{"correlationId":"` + strings.Repeat("é", 256) + `","requestedBy":""}`,
			messages.SyncRequested{CorrelationID: strings.Repeat("é", 256)}},
		{"escaped strings", `{"requestedBy":"a\u00e9\n\"b\""}`, messages.SyncRequested{RequestedBy: "a\u00e9\n\"b\""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.DecodeRequested([]byte(tc.body))
			if err != nil {
				t.Fatalf("DecodeRequested: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate of a decoded request: %v", err)
			}
		})
	}
}

func TestDecodeRequestedSizeLimitIsInclusive(t *testing.T) {
	body := []byte(`{}` + strings.Repeat(" ", messages.MaxRequestBytes-2))
	if _, err := messages.DecodeRequested(body); err != nil {
		t.Fatalf("a body of exactly MaxRequestBytes: %v", err)
	}
	if _, err := messages.DecodeRequested(append(body, ' ')); err == nil {
		t.Fatal("a body of MaxRequestBytes+1 was accepted")
	}
}

func TestDecodeRequestedKeepsReadableFieldsOnError(t *testing.T) {
	tests := []struct{ name, body string }{
		{"bad value", `{"correlationId":"c-9","requestedBy":"ops","saveMode":"merj","types":["Patient"]}`},
		{"unknown field", `{"correlationId":"c-9","requestedBy":"ops","extra":true,"types":["Patient"]}`},
		{"mistyped field", `{"correlationId":"c-9","requestedBy":"ops","timeout":7200,"types":["Patient"]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.DecodeRequested([]byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			if got.CorrelationID != "c-9" || got.RequestedBy != "ops" || !reflect.DeepEqual(got.Types, []string{"Patient"}) {
				t.Errorf("echo fields lost: %#v", got)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if err := (messages.SyncRequested{}).Validate(); err != nil {
		t.Errorf("zero request: %v", err)
	}
	ok := messages.SyncRequested{ExportURL: "https://s.example/fhir", SaveMode: messages.SaveModeMerge, Types: []string{"Patient"},
		Since: messages.SinceAuto, Concurrency: messages.ConcurrencyQueue, Timeout: "30m"}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid request: %v", err)
	}
	bad := messages.SyncRequested{SaveMode: "merj", Since: "2025-01-01", Timeout: "8d"}
	err := bad.Validate()
	want := `saveMode: "merj" is not one of merge, overwrite, append, ignore, error; ` +
		`since: "2025-01-01" is not an instant (RFC 3339 with time zone) or "auto"; ` +
		`timeout: "8d" is not a duration (e.g. "90m", "2h")`
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant %s", err, want)
	}
	if !errors.Is(err, messages.ErrInvalidRequest) {
		t.Error("errors.Is(err, ErrInvalidRequest) = false")
	}
}

func TestRequestAccessors(t *testing.T) {
	tests := []struct {
		req       messages.SyncRequested
		mode      messages.SinceMode
		since     time.Time
		sinceOK   bool
		until     time.Time
		untilOK   bool
		timeout   time.Duration
		timeoutOK bool
		queue     bool
		modeName  string
	}{
		{messages.SyncRequested{}, messages.SinceModeFull, time.Time{}, false, time.Time{}, false, 0, false, false, "full"},
		{messages.SyncRequested{Since: "auto", Timeout: "90m", Concurrency: "queue"}, messages.SinceModeAuto, time.Time{}, false, time.Time{}, false, 90 * time.Minute, true, true, "auto"},
		{messages.SyncRequested{Since: "2025-01-01T01:00:00+01:00", Until: "2025-02-01T00:00:00.25Z", Timeout: "0s", Concurrency: "forbid"},
			messages.SinceModeInstant, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), true,
			time.Date(2025, 2, 1, 0, 0, 0, 250_000_000, time.UTC), true, 0, false, false, "instant"},
		{messages.SyncRequested{Timeout: "169h"}, messages.SinceModeFull, time.Time{}, false, time.Time{}, false, 0, false, false, "full"},
	}
	for i, tc := range tests {
		if got := tc.req.SinceMode(); got != tc.mode || got.String() != tc.modeName {
			t.Errorf("%d: SinceMode = %v (%s), want %v (%s)", i, got, got, tc.mode, tc.modeName)
		}
		if got, ok := tc.req.SinceTime(); ok != tc.sinceOK || !got.Equal(tc.since) {
			t.Errorf("%d: SinceTime = %v, %v; want %v, %v", i, got, ok, tc.since, tc.sinceOK)
		}
		if got, ok := tc.req.UntilTime(); ok != tc.untilOK || !got.Equal(tc.until) {
			t.Errorf("%d: UntilTime = %v, %v; want %v, %v", i, got, ok, tc.until, tc.untilOK)
		}
		if got, ok := tc.req.TimeoutDuration(); ok != tc.timeoutOK || got != tc.timeout {
			t.Errorf("%d: TimeoutDuration = %v, %v; want %v, %v", i, got, ok, tc.timeout, tc.timeoutOK)
		}
		if got := tc.req.QueueOnConflict(); got != tc.queue {
			t.Errorf("%d: QueueOnConflict = %v", i, got)
		}
	}
}

func TestParseInstant(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2025-01-01T00:00:00Z", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2025-01-01T00:00:00.000000001-05:00", time.Date(2025, 1, 1, 5, 0, 0, 1, time.UTC), true},
		{"0001-01-01T00:00:00Z", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"0000-01-01T00:00:00Z", time.Time{}, false},
		{"2025-01-01T24:00:00Z", time.Time{}, false},
		{"2025-01-01 00:00:00Z", time.Time{}, false},
		{"2025-01-01T00:00:00+0100", time.Time{}, false},
		{"2024-02-29T00:00:00Z", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), true},
		{"2025-02-29T00:00:00Z", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tc := range tests {
		got, ok := messages.ParseInstant(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("ParseInstant(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
