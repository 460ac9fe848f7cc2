package redisstore

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// fullRun sets every field of a run record.
func fullRun() *handlers.Run {
	t0 := time.Date(2026, 12, 3, 18, 4, 5, 123456789, time.UTC)
	since, until := t0.Add(-time.Hour), t0.Add(time.Hour).In(time.FixedZone("x", -(5*3600+30*60)))
	return &handlers.Run{
		RunID: "run-1", RequestID: "req-1", Target: "tgt", State: handlers.RunCompleted, Token: 1764784800123456,
		Driver: "host-1/1234",
		Request: messages.SyncRequested{ExportURL: "https://src.example/fhir", SaveMode: "merge", Types: []string{"Patient", "Observation"},
			Since: "auto", Until: "2026-12-03T00:00:00Z", TypeFilters: []string{"Patient?active=true"}, Elements: []string{"id"},
			IncludeAssociatedData: []string{"LatestProvenanceResources"}, Concurrency: "queue", Timeout: "2h",
			CorrelationID: "corr-1", RequestedBy: "ops"},
		Params: handlers.ImportParams{ExportURL: "https://src.example/fhir/$export", SaveMode: "merge", Types: []string{"Patient"},
			Elements: []string{"id", "meta"}, TypeFilters: []string{"Patient?active=true"}, IncludeAssociatedData: []string{"x"},
			Since: &since, Until: &until},
		WatermarkKey: "wm/abc", StatusURL: "https://pathling.example/fhir/$job?id=1", Progress: "42%",
		ExpectedEnd: t0.Add(time.Minute), Attempts: 2, Polls: 7, Losses: 1,
		StartedAt: t0, FirstKickOff: t0.Add(time.Second), UpdatedAt: t0.Add(2 * time.Second), Deadline: t0.Add(2 * time.Hour),
		FinishedAt: t0.Add(3 * time.Second),
		Outcome: &handlers.Event{Subject: "pathling.sync.completed.tgt",
			Envelope: messages.Envelope{ID: "evt-1", Source: "pathling-sync", Type: "pathling.sync.completed", Subject: "tgt",
				ContentType: "application/json", Time: t0, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				TraceState: "k=v", ReplayOf: "evt-0"},
			Body: json.RawMessage(`{"requestId":"req-1","polls":7,"types":["Patient"],"note":"a b\"c\\u003c","empty":{},"n":null}`)},
	}
}

func wantSameJSON(t *testing.T, r *handlers.Run) {
	t.Helper()
	want, wantErr := json.Marshal(r)
	got, ok := appendRun(nil, r, r.Token)
	if !ok {
		return // left to json.Marshal: the same bytes by construction
	}
	if wantErr != nil {
		t.Fatalf("appendRun wrote %s where json.Marshal fails: %v", got, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendRun:\n%s\njson.Marshal:\n%s", got, want)
	}
}

// The record's encoder writes json.Marshal's bytes, with every field set,
// with none, and with what it leaves to json.Marshal.
func TestRunJSONMatchesEncodingJSON(t *testing.T) {
	wantSameJSON(t, fullRun())
	wantSameJSON(t, &handlers.Run{})
	r := fullRun()
	r.Outcome.Body = nil
	wantSameJSON(t, r)
	r.Outcome = nil
	r.Params.Since, r.Params.Until, r.Request = nil, nil, messages.SyncRequested{SaveMode: "overwrite"}
	wantSameJSON(t, r)
	for _, s := range []string{"a<b", "a&b", "ü", "\u2028", "\xff", "tab\there", `q"uote`, `back\slash`, "\x7f", "\x00"} {
		r := fullRun()
		r.Target, r.Request.Types[1], r.Outcome.Envelope.TraceState = s, s, s
		wantSameJSON(t, r)
		if got, _ := appendRun(nil, r, r.Token); !bytes.Contains(got, []byte(`"target":`)) {
			t.Fatalf("%q not written by appendRun", s)
		}
	}
	for _, tm := range []time.Time{{}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 30*3600)), time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("s", 3600+30))} {
		r := fullRun()
		r.StartedAt, r.ExpectedEnd, *r.Params.Since, r.Outcome.Envelope.Time = tm, tm, tm, tm
		wantSameJSON(t, r)
	}
	for _, body := range []string{``, `{"a": 1}`, "{\"a\":\n1}", `{"a":"<"}`, `{"a":"&"}`, "{\"a\":\"\u2028\"}", `{"a":`, `"x"`, `[1,2]`, `12`} {
		r := fullRun()
		r.Outcome.Body = json.RawMessage(body)
		wantSameJSON(t, r)
	}
	r = fullRun()
	if data, ok := appendRun(nil, r, r.Token); !ok || !compactJSON(r.Outcome.Body) {
		t.Fatalf("a usual record left to encoding/json: %s", data)
	}
}

// A field added to the record's types must be added to appendRun too (and to
// the list here): encoding/json would write it, appendRun would not.
func TestRunJSONKnowsEveryField(t *testing.T) {
	for typ, want := range map[reflect.Type]string{
		reflect.TypeFor[handlers.Run](): "RunID runId RequestID requestId Target target State state Token token Driver driver,omitempty " +
			"Request request Params params WatermarkKey watermarkKey StatusURL statusUrl,omitempty Progress progress,omitempty " +
			"ExpectedEnd expectedEnd,omitzero Attempts attempts Polls polls Losses losses StartedAt startedAt " +
			"FirstKickOff firstKickOff,omitzero UpdatedAt updatedAt Deadline deadline FinishedAt finishedAt,omitzero Outcome outcome,omitempty",
		reflect.TypeFor[messages.SyncRequested](): "ExportURL exportUrl,omitempty SaveMode saveMode,omitempty Types types,omitempty " +
			"Since since,omitempty Until until,omitempty TypeFilters typeFilters,omitempty Elements elements,omitempty " +
			"IncludeAssociatedData includeAssociatedData,omitempty Concurrency concurrency,omitempty Timeout timeout,omitempty " +
			"CorrelationID correlationId,omitempty RequestedBy requestedBy,omitempty",
		reflect.TypeFor[handlers.ImportParams](): "ExportURL exportUrl SaveMode saveMode Types types,omitempty Elements elements,omitempty " +
			"TypeFilters typeFilters,omitempty IncludeAssociatedData includeAssociatedData,omitempty Since since,omitempty Until until,omitempty",
		reflect.TypeFor[handlers.Event]():    "Subject subject Envelope envelope Body body",
		reflect.TypeFor[messages.Envelope](): "ID  Source  Type  Subject  ContentType  Time  TraceParent  TraceState  ReplayOf ",
	} {
		var got []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			got = append(got, f.Name+" "+f.Tag.Get("json"))
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("%s's fields changed: update appendRun and this test\ngot  %s\nwant %s", typ, g, want)
		}
		for _, m := range []string{"MarshalJSON", "MarshalText"} {
			if _, ok := typ.MethodByName(m); ok {
				t.Errorf("%s has %s: appendRun must call it", typ, m)
			}
			if _, ok := reflect.PointerTo(typ).MethodByName(m); ok {
				t.Errorf("*%s has %s: appendRun must call it", typ, m)
			}
		}
	}
}

func FuzzRunJSON(f *testing.F) {
	f.Add("req-1", "https://p.example/$job?id=1", `{"a":1}`, int64(1764784800123456789), 0, "merge")
	f.Add("ü<>&", "\u2028\xff", `{"a": "<"}`, int64(-62135596800000000), 3600, "")
	f.Fuzz(func(t *testing.T, s, url, body string, nanos int64, offset int, mode string) {
		tm := time.Unix(0, nanos).In(time.FixedZone("z", offset%(48*3600)))
		r := fullRun()
		r.RequestID, r.StatusURL, r.Params.SaveMode, r.Request.Types = s, url, mode, []string{s, mode}
		r.StartedAt, r.FinishedAt, r.Params.Since, r.Outcome.Envelope.Time = tm, tm, &tm, tm
		r.Outcome.Body = json.RawMessage(body)
		wantSameJSON(t, r)
	})
}

func BenchmarkRunJSON(b *testing.B) {
	r := fullRun()
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appendRun", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = appendRun(buf[:0], r, r.Token)
		}
	})
}
