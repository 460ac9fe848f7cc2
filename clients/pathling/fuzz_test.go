package pathling

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The seeds are bodies Pathling sends (see the wire contract) plus edge cases.

func FuzzParseOperationOutcome(f *testing.F) {
	for _, seed := range []string{
		acceptedOutcome,
		processingOutcome,
		errorOutcome("processing", "Ping and pull import failed: No files with extension .ndjson were downloaded"),
		errorOutcome("processing", "au.csiro.pathling.errors.InvalidUserInputError: Missing required parameter: exportUrl"),
		errorOutcome("forbidden", "The requested job is not owned by the current user"),
		`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"x","details":{"text":"t"}}]}`,
		`{"resourceType":"OperationOutcome"}`,
		`{"resourceType":"OperationOutcome","issue":null}`,
		`{"resourceType":"OperationOutcome","issue":[null,{}]}`,
		`{"resourceType":"Parameters"}`,
		`[]`, `null`, ``, `{"resourceType":"OperationOutcome","issue":[{"diagnostics":"\ud800"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		oo, err := ParseOperationOutcome(b)
		if err != nil {
			return
		}
		_ = oo.Diagnostics()
		// Round trip: what we write, we read back unchanged.
		out, err := json.Marshal(oo)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := ParseOperationOutcome(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(back, oo) {
			t.Fatalf("round trip changed the outcome:\n%+v\n%+v", oo, back)
		}
	})
}

func FuzzParseImportResult(f *testing.F) {
	for _, seed := range []struct{ body, contentType string }{
		{parametersResult, "application/fhir+json;charset=UTF-8"},
		{`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueInstant":"2026-03-01T11:20:30.123+01:00"}]}`, ""},
		{`{"resourceType":"Parameters","parameter":[{"name":"output","part":[{"name":"inputUrl","valueUri":"u"}]}]}`, "application/fhir+json"},
		{`{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r","output":{"inputUrl":"u1"}}`, "application/json"},
		{`{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r","output":[{"inputUrl":"u1"},{"inputUrl":"u2"}]}`, "application/json"},
		{`{"transactionTime":"2026-03-01T10:20:30.123+0000"}`, ""},
		{`{"output":null}`, ""},
		{`{"output":[null,{}]}`, ""},
		{`{"resourceType":"Parameters","parameter":[{"name":"output","part":null}]}`, ""},
		{`{"resourceType":"OperationOutcome"}`, ""},
		{`[]`, ""},
		{`{}`, "text/plain"},
		{`{}`, "application/"},
	} {
		f.Add([]byte(seed.body), seed.contentType)
	}
	f.Fuzz(func(t *testing.T, b []byte, contentType string) {
		res, err := ParseImportResult(b, contentType)
		if err != nil {
			return
		}
		if res == nil {
			t.Fatal("nil result without error")
		}
		if !res.TransactionTime.IsZero() && res.TransactionTimeRaw == "" {
			t.Fatal("a transaction time from nothing")
		}
		// Round trip through both shapes Pathling writes.
		for shape, body := range map[string][]byte{
			"Parameters": asParameters(t, res),
			"plain":      asPlain(t, res),
		} {
			back, err := ParseImportResult(body, "")
			if err != nil {
				t.Fatalf("%s: re-parse of %s: %v", shape, body, err)
			}
			if !resultsEqual(back, res) {
				t.Fatalf("%s: round trip changed the result:\n%+v\n%+v", shape, res, back)
			}
		}
	})
}

// asParameters writes r as Pathling's FHIR Parameters result.
func asParameters(t *testing.T, r *ImportResult) []byte {
	t.Helper()
	str := func(s string) *string { return &s }
	var params []fhirParameter
	if r.TransactionTimeRaw != "" {
		params = append(params, fhirParameter{Name: "transactionTime", ValueString: str(r.TransactionTimeRaw)})
	}
	if r.Request != "" {
		params = append(params, fhirParameter{Name: "request", ValueString: str(r.Request)})
	}
	for _, o := range r.Outputs {
		params = append(params, fhirParameter{Name: "output", Part: []fhirParameter{{Name: "inputUrl", ValueURL: str(o)}}})
	}
	b, err := json.Marshal(fhirParameters{ResourceType: "Parameters", Parameter: params})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// asPlain writes r as Pathling's plain-JSON result: output is an object for
// exactly one file and an array otherwise.
func asPlain(t *testing.T, r *ImportResult) []byte {
	t.Helper()
	m := map[string]any{}
	if r.TransactionTimeRaw != "" {
		m["transactionTime"] = r.TransactionTimeRaw
	}
	if r.Request != "" {
		m["request"] = r.Request
	}
	outs := make([]map[string]string, 0, len(r.Outputs))
	for _, o := range r.Outputs {
		outs = append(outs, map[string]string{"inputUrl": o})
	}
	switch len(outs) {
	case 0:
	case 1:
		m["output"] = outs[0]
	default:
		m["output"] = outs
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
