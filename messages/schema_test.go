package messages_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/pathling-sync/pathling-sync/messages"
)

// compileSchema compiles one embedded schema; the schemas load nothing from the network.
func compileSchema(t testing.TB, name string) *jsonschema.Schema {
	t.Helper()
	raw := messages.Schema(name)
	if raw == nil {
		t.Fatalf("Schema(%q) = nil", name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	id := "urn:pathling-sync:schema:" + name + ":v1"
	if got := doc.(map[string]any)["$id"]; got != id {
		t.Fatalf("%s: $id = %v, want %s", name, got, id)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.UseLoader(noLoader{})
	if err := c.AddResource(id, doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	sch, err := c.Compile(id)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return sch
}

// noLoader refuses every URL: the metaschemas are built into the library, nothing else is needed.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) { return nil, os.ErrNotExist }

func validateJSON(t testing.TB, sch *jsonschema.Schema, b []byte) error {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	return sch.Validate(inst)
}

func TestSchemaNames(t *testing.T) {
	want := []string{"sync-requested", "sync-completed", "sync-failed"}
	if got := messages.SchemaNames(); !reflect.DeepEqual(got, want) {
		t.Errorf("SchemaNames = %v", got)
	}
	if messages.Schema("nope") != nil || messages.Schema("../schema") != nil {
		t.Error("Schema of an unknown name is not nil")
	}
	a := messages.Schema(messages.SchemaRequested)
	a[0] = 'X'
	if messages.Schema(messages.SchemaRequested)[0] != '{' {
		t.Error("Schema returns shared bytes")
	}
	for _, name := range want {
		b, err := fsReadFile(name + ".schema.json")
		if err != nil || !bytes.Equal(b, messages.Schema(name)) {
			t.Errorf("SchemaFS %s: %v", name, err)
		}
	}
}

func fsReadFile(name string) ([]byte, error) {
	f, err := messages.SchemaFS().Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

// TestSchemaExamples: every example in testdata/<schema>/valid validates and every one in
// testdata/<schema>/invalid is rejected; for SyncRequested DecodeRequested agrees on both.
func TestSchemaExamples(t *testing.T) {
	for _, name := range messages.SchemaNames() {
		sch := compileSchema(t, name)
		for _, dir := range []string{"valid", "invalid"} {
			files, err := filepath.Glob(filepath.Join("testdata", name, dir, "*.json"))
			if err != nil || len(files) == 0 {
				t.Fatalf("no examples in testdata/%s/%s (%v)", name, dir, err)
			}
			for _, file := range files {
				t.Run(name+"/"+dir+"/"+filepath.Base(file), func(t *testing.T) {
					b, err := os.ReadFile(file)
					if err != nil {
						t.Fatal(err)
					}
					schemaErr := validateJSON(t, sch, b)
					if dir == "valid" && schemaErr != nil {
						t.Errorf("schema rejects a valid example: %v", schemaErr)
					}
					if dir == "invalid" && schemaErr == nil {
						t.Error("schema accepts an invalid example")
					}
					switch name {
					case messages.SchemaRequested:
						_, decodeErr := messages.DecodeRequested(b)
						if dir == "valid" && decodeErr != nil {
							t.Errorf("DecodeRequested rejects a valid example: %v", decodeErr)
						}
						if dir == "invalid" && decodeErr == nil {
							t.Error("DecodeRequested accepts an invalid example")
						}
					case messages.SchemaCompleted:
						checkOutcomeRoundTrip[messages.SyncCompleted](t, sch, b, dir == "valid")
					case messages.SchemaFailed:
						checkOutcomeRoundTrip[messages.SyncFailed](t, sch, b, dir == "valid")
					}
				})
			}
		}
	}
}

// checkOutcomeRoundTrip decodes a valid outcome example into its Go type (rejecting unknown
// fields) and checks that the re-encoding still validates.
func checkOutcomeRoundTrip[T any](t *testing.T, sch *jsonschema.Schema, b []byte, valid bool) {
	t.Helper()
	if !valid {
		return
	}
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("Go type cannot hold a valid example: %v", err)
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := validateJSON(t, sch, again); err != nil {
		t.Errorf("re-encoded example invalid: %v\n%s", err, again)
	}
}

// TestSchemaAcceptsGoValues: values built in Go, marshalled with encoding/json, validate.
func TestSchemaAcceptsGoValues(t *testing.T) {
	start := time.Date(2025, 2, 1, 12, 0, 0, 987654321, time.FixedZone("AEST", 10*3600))
	values := map[string][]any{
		messages.SchemaRequested: {
			messages.SyncRequested{},
			messages.SyncRequested{ExportURL: "https://s.example/fhir", SaveMode: messages.SaveModeIgnore,
				Types: []string{"Patient", "Observation"}, Since: messages.FormatInstant(start), Until: messages.FormatInstant(start.Add(time.Hour)),
				TypeFilters: []string{"Observation?code=x"}, Elements: []string{"Observation.code"}, IncludeAssociatedData: []string{"LatestProvenanceResources"},
				Concurrency: messages.ConcurrencyForbid, Timeout: (90 * time.Minute).String(), CorrelationID: "c", RequestedBy: "r"},
		},
		messages.SchemaCompleted: {
			messages.SyncCompleted{RequestID: "r", RunID: "run", Target: "default", ExportURL: "https://s.example/fhir",
				SaveMode: messages.SaveModeMerge, Watermark: messages.FormatInstant(start), PathlingJob: "http://p/fhir/$job?id=1",
				StartedAt: start, FinishedAt: start.Add(time.Minute), DurationMs: 60000, Empty: true},
			messages.SyncCompleted{RequestID: "r", RunID: "run", Target: "t_2", ExportURL: "http://s/fhir/$export",
				SaveMode: messages.SaveModeOverwrite, Types: []string{"Patient"}, Since: "2025-01-01T00:00:00Z",
				Until: "2025-01-02T00:00:00Z", Watermark: "2025-01-03T00:00:00Z", PathlingJob: "j",
				PathlingTransactionTime: "2025-01-03T00:03:00.000Z", Outputs: 3, StartedAt: start, FinishedAt: start,
				Polls: 12, Attempts: 2, CorrelationID: "c", RequestedBy: "r"},
		},
		messages.SchemaFailed: {
			messages.SyncFailed{RequestID: "r", Target: "t", Reason: messages.ReasonInvalidRequest, Message: "m"},
			messages.SyncFailed{RequestID: "r", RunID: "run", Target: "t", ExportURL: "whatever was sent", SaveMode: "merj",
				Types: []string{"patient"}, Since: "2025-13-01", Until: "x", Reason: messages.ReasonRejected, Retryable: false,
				Message: "m", HTTPStatus: 400, OperationOutcome: json.RawMessage(`{"resourceType":"OperationOutcome"}`),
				RunningRequestID: "other", Attempts: 1, CorrelationID: "c", RequestedBy: "r", StartedAt: start, FinishedAt: start},
		},
	}
	for _, r := range messages.Reasons() {
		f := messages.FailedFor("r", "t", messages.SyncRequested{Since: "auto"})
		f.Reason, f.Message, f.Retryable = r, "m", true
		values[messages.SchemaFailed] = append(values[messages.SchemaFailed], f)
	}
	for name, vs := range values {
		sch := compileSchema(t, name)
		for i, v := range vs {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if err := validateJSON(t, sch, b); err != nil {
				t.Errorf("%s value %d: %v\n%s", name, i, err, b)
			}
		}
	}
}

// TestSchemaRejectsBadGoValues: the outcome schemas catch what a buggy producer could emit.
func TestSchemaRejectsBadGoValues(t *testing.T) {
	completed := compileSchema(t, messages.SchemaCompleted)
	failed := compileSchema(t, messages.SchemaFailed)
	bad := []struct {
		sch *jsonschema.Schema
		v   any
	}{
		{completed, messages.SyncCompleted{}}, // required strings empty
		{completed, messages.SyncCompleted{RequestID: "r", RunID: "run", Target: "a.b", ExportURL: "https://s/fhir",
			SaveMode: "merge", Watermark: "2025-01-01T00:00:00Z", PathlingJob: "j"}},
		{completed, messages.SyncCompleted{RequestID: "r", RunID: "run", Target: "t", ExportURL: "https://s/fhir",
			SaveMode: "merge", Watermark: "yesterday", PathlingJob: "j"}},
		{completed, messages.SyncCompleted{RequestID: "r", RunID: "run", Target: "t", ExportURL: "https://s/fhir",
			SaveMode: "merge", Watermark: "2025-01-01T00:00:00Z", PathlingJob: "j", Outputs: -1}},
		{failed, messages.SyncFailed{RequestID: "r", Target: "t", Reason: "boom", Message: "m"}},
		{failed, messages.SyncFailed{RequestID: "r", Target: "t", Reason: messages.ReasonRejected, Message: "m", HTTPStatus: 1000}},
		{failed, messages.SyncFailed{RequestID: "r", Target: "t", Reason: messages.ReasonRejected, Message: "m",
			OperationOutcome: json.RawMessage(`["not an object"]`)}},
		{failed, messages.SyncFailed{Target: "t", Reason: messages.ReasonRejected, Message: "m"}},
	}
	for i, tc := range bad {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(t, tc.sch, b); err == nil {
			t.Errorf("value %d accepted: %s", i, b)
		}
	}
}

// TestSchemaAcceptsRandomValidRequests: requests built at random from valid parts pass Validate,
// the schema, and decode back to themselves.
func TestSchemaAcceptsRandomValidRequests(t *testing.T) {
	sch := compileSchema(t, messages.SchemaRequested)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(options ...string) string { return options[rng.IntN(len(options))] }
	some := func(options ...string) []string {
		var out []string
		for _, o := range options {
			if rng.IntN(2) == 0 {
				out = append(out, o)
			}
		}
		return out
	}
	for i := range 500 {
		since := time.Date(2000+rng.IntN(30), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e9), time.FixedZone("", (rng.IntN(27)-13)*3600))
		req := messages.SyncRequested{
			ExportURL:             pick("", "https://s.example/fhir", "http://10.0.0.1:8080/fhir/$export", "HTTPS://S.EXAMPLE"),
			SaveMode:              pick(append(messages.SaveModes(), "")...),
			Types:                 some("Patient", "Observation", "MedicationRequest", "Encounter"),
			Since:                 pick("", "auto", since.Format(time.RFC3339Nano), since.Format(time.RFC3339)),
			TypeFilters:           some("Patient?active=true", "Observation?code=http://loinc.org|1234-5&date=ge2020"),
			Elements:              some("id", "meta", "Patient.name"),
			IncludeAssociatedData: some("LatestProvenanceResources", "RelevantProvenanceResources", "_custom"),
			Concurrency:           pick("", "forbid", "queue"),
			Timeout:               pick("", "1h", "90m", "1h30m15s", "168h", "0.5h", "+2h", "1500ms"),
			CorrelationID:         pick("", "c-1", strings.Repeat("é", 256)),
			RequestedBy:           pick("", "ops@example", "Grüße"),
		}
		if req.Since != "" && req.Since != "auto" && rng.IntN(2) == 0 {
			req.Until = since.Add(time.Duration(1+rng.IntN(1e6)) * time.Second).UTC().Format(time.RFC3339Nano)
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("%d: Validate(%+v): %v", i, req, err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateJSON(t, sch, b); err != nil {
			t.Fatalf("%d: schema rejects %s: %v", i, b, err)
		}
		got, err := messages.DecodeRequested(b)
		if err != nil {
			t.Fatalf("%d: DecodeRequested(%s): %v", i, b, err)
		}
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("%d: decoded %+v, want %+v", i, got, req)
		}
	}
}

// TestSchemaPropertiesMatchGoFields: each JSON field of each Go type is a property of its schema
// and vice versa; required properties are exactly the fields always encoded (no omitempty or
// omitzero); and the enums equal the Go constants.
func TestSchemaPropertiesMatchGoFields(t *testing.T) {
	types := map[string]reflect.Type{
		messages.SchemaRequested: reflect.TypeFor[messages.SyncRequested](),
		messages.SchemaCompleted: reflect.TypeFor[messages.SyncCompleted](),
		messages.SchemaFailed:    reflect.TypeFor[messages.SyncFailed](),
	}
	for name, typ := range types {
		var doc struct {
			Schema               string                     `json:"$schema"`
			AdditionalProperties *bool                      `json:"additionalProperties"`
			Properties           map[string]json.RawMessage `json:"properties"`
			Required             []string                   `json:"required"`
		}
		if err := json.Unmarshal(messages.Schema(name), &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %q", name, doc.Schema)
		}
		if doc.AdditionalProperties == nil || *doc.AdditionalProperties {
			t.Errorf("%s: additionalProperties is not false", name)
		}
		var fields, always []string
		for f := range typ.Fields() {
			tag := f.Tag.Get("json")
			jsonName, opts, _ := strings.Cut(tag, ",")
			if jsonName == "" || jsonName == "-" {
				t.Errorf("%s: field %s has no JSON name", name, f.Name)
				continue
			}
			fields = append(fields, jsonName)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				always = append(always, jsonName)
			}
		}
		var props []string
		for p := range doc.Properties {
			props = append(props, p)
		}
		slices.Sort(fields)
		slices.Sort(props)
		slices.Sort(always)
		required := slices.Sorted(slices.Values(doc.Required))
		if !slices.Equal(fields, props) {
			t.Errorf("%s: Go fields %v\nschema properties %v", name, fields, props)
		}
		if !slices.Equal(always, required) {
			t.Errorf("%s: always-encoded Go fields %v\nschema required %v", name, always, required)
		}
	}

	enum := func(name, prop string) []string {
		var doc struct {
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(messages.Schema(name), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Properties[prop].Enum
	}
	var reasons []string
	for _, r := range messages.Reasons() {
		reasons = append(reasons, string(r))
	}
	for _, tc := range []struct {
		got, want []string
		what      string
	}{
		{enum(messages.SchemaRequested, "saveMode"), messages.SaveModes(), "requested saveMode"},
		{enum(messages.SchemaCompleted, "saveMode"), messages.SaveModes(), "completed saveMode"},
		{enum(messages.SchemaRequested, "concurrency"), messages.ConcurrencyPolicies(), "concurrency"},
		{enum(messages.SchemaFailed, "reason"), reasons, "reason"},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s enum %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}
