package pathling

import (
	"testing"
)

// Where parseParametersFast answers, it answers as encoding/json does.
func FuzzParseParametersFast(f *testing.F) {
	for _, seed := range []string{
		parametersResult,
		`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueString":"2006-01-02T15:04:05.000+00:00"},{"name":"request","valueString":"http://127.0.0.1:1/t/x/fhir/$import-pnp"},{"name":"output","part":[{"name":"inputUrl","valueUrl":"http://127.0.0.1:1/staging/1/Patient.ndjson"}]}]}`,
		"{ \"parameter\" : [ { \"part\" : [ { \"valueUri\" : \"u\" , \"name\" : \"inputUrl\" } ] , \"name\" : \"output\" } ] ,\n\t\"resourceType\" : \"Parameters\" }\r\n",
		`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueInstant":"2026-03-01T11:20:30.123+01:00"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueDateTime":"x","valueString":"y"},{"name":"transactionTime","valueString":"z"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueUrl":"a","valueUri":"b"},{"name":"request","valueString":"c"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"output","part":[{"name":"inputUrl","valueString":"s","valueUri":"u"},{"name":"other","valueUrl":"o"},{"name":"inputUrl"}]}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"output","part":[{"name":"x","part":[{"name":"y","part":[]}]}]}]}`,
		`{"resourceType":"Parameters","extra":{"a":[1,2.5e3,true,false,null,"s\"q\\",{"b":[]}]},"parameter":[],"more":-0}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"a","unknown":[{"name":5}],"id":"x"}]}`,
		`{"resourceType":"Parameters","parameter":null}`,
		`{"resourceType":"Parameters"}`,
		`{"resourceType":"Parameters","parameter":[null]}`,
		`{"resourceType":"Parameters","parameter":[{"name":null,"valueString":null}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueString":5}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"\u0061\/"}]}`,
		`{"resourceType":"Parameters","parameter":[{"NAME":"request","valueString":"a"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valuestring":"a"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueſtring":"a"}]}`,
		`{"resourcetype":"Parameters","parameter":[]}`,
		`{"resourceType":"Parameters","resourceType":"Parameters","parameter":[]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"output","part":[{"name":"inputUrl","valueUrl":"a"}]}],"parameter":[{"name":"output","part":[{"name":"inputUrl"}]}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"a","valueString":"b"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"` + "\xff" + `"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"output","part":{"name":"inputUrl"}}]}`,
		`{"resourceType":"OperationOutcome"}`,
		`{"transactionTime":"2026-03-01T10:20:30.123Z","request":"r","output":{"inputUrl":"u1"}}`,
		`{"resourceType":"Parameters","parameter":[]} x`,
		`{"resourceType":"Parameters","parameter":[]`,
		`[]`, ``, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseParametersFast(b)
		if !ok {
			return
		}
		want, err := parseImportResultJSON(b)
		if err != nil {
			t.Fatalf("fast path read %q, encoding/json refused it: %v", b, err)
		}
		if !resultsEqual(got, want) {
			t.Fatalf("%q:\nfast %+v\njson %+v", b, got, want)
		}
	})
}

// The fast path takes Pathling's own answers (or the benchmarks measure
// the fallback).
func TestParseParametersFastTakesPathlingsResults(t *testing.T) {
	for _, b := range []string{
		parametersResult,
		"{\n  \"resourceType\" : \"Parameters\",\n  \"parameter\" : [ {\n    \"name\" : \"transactionTime\",\n    \"valueString\" : \"2026-03-01T10:20:30.123\"\n  } ]\n}",
		`{"resourceType":"Parameters","parameter":[]}`,
	} {
		if _, ok := parseParametersFast([]byte(b)); !ok {
			t.Errorf("fast path declined %s", b)
		}
	}
}
