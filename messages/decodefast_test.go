package messages

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// DecodeRequested (scanValidRequest for valid JSON) answers exactly as encoding/json's Decoder
// path does: the same request, the same errors in the same order.
func FuzzDecodeRequestedMatchesDecoder(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", SchemaRequested, "*", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		string(benchRequest), `{}`, ` { } `, `{"a":1}`, `{"types":[null]}`, `{"types":[]}`, `{"types":null}`,
		`{"types":["Patient",1,{"a":[]},true,null,"Observation"]}`, `{"types":{"a":"b"}}`, `{"types":"Patient"}`,
		`{"saveMode":"merge","saveMode":"merge"}`, `{"x":1,"x":2}`, `{"Types":["Patient"]}`, `{"exportUrl":null}`,
		`{"exportUrl":"https:\/\/h\/fhir","requestedBy":"\u00e9\ud800x\n"}`, `{"typ\u0065s":["Patient"]}`,
		`{"exportUrl":"https://h/fhir","saveMode":"overwrite","types":["Patient"],"since":"auto","until":"2025-01-01T00:00:00Z",` +
			`"typeFilters":["Patient?active=true"],"elements":["id"],"includeAssociatedData":["LatestProvenanceResources"],` +
			`"concurrency":"forbid","timeout":"2h","correlationId":"c","requestedBy":"r"}`,
		"{\n\t\"since\" : \"2025-01-01T00:00:00Z\" ,\r\n \"until\":\"2024-01-01T00:00:00Z\" , \"unknown\" : [ 1 , -2.5e3 , \"]\" ] }",
		`{"a":{"b":{"c":[[],{}]}},"saveMode":5}`, `{}{}`, `{`, `{"a"}`, `{"types":["a",]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkBody(body) != nil {
			return
		}
		got, gotErr := DecodeRequested(body)
		want, wantErr := decodeRequestedJSON(body)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotErr, wantErr) {
			t.Fatalf("%q:\n got %#v %v\nwant %#v %v", body, got, gotErr, want, wantErr)
		}
	})
}
