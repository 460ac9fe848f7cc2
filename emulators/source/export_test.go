package source

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFullExportHasEveryResource(t *testing.T) {
	h := newHarness(t, Config{Seed: 7, Patients: 10})
	res := h.export(nil)

	want := map[string]int{"Patient": 10, "Encounter": 20, "Observation": 30, "Condition": 10}
	for typ, n := range want {
		if got := res.count(typ); got != n {
			t.Errorf("%s: exported %d, want %d", typ, got, n)
		}
		stored := h.src.Resources(typ)
		for id, raw := range stored {
			var obj map[string]any
			if err := json.Unmarshal(raw, &obj); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(obj, res.resources[typ][id]) {
				t.Errorf("%s/%s differs between export and store", typ, id)
			}
		}
	}
	var types []string
	for _, f := range res.manifest.Output {
		types = append(types, f.Type)
	}
	if !reflect.DeepEqual(types, []string{"Condition", "Encounter", "Observation", "Patient"}) {
		t.Errorf("output types %v", types)
	}
	if res.manifest.Request != h.base+"/$export" {
		t.Errorf("request %q", res.manifest.Request)
	}
	if res.manifest.RequiresAccessToken || len(res.manifest.Deleted) != 0 || len(res.manifest.Error) != 0 {
		t.Errorf("manifest %+v", res.manifest)
	}
	if res.manifest.TransactionTime != h.clock.Now().Format(instantLayout) {
		t.Errorf("transactionTime %s, clock %s", res.manifest.TransactionTime, h.clock.Now())
	}
	// References hold together: every Observation's subject is an exported Patient.
	for _, obs := range res.resources["Observation"] {
		ref := obs["subject"].(map[string]any)["reference"].(string)
		if _, ok := res.resources["Patient"][strings.TrimPrefix(ref, "Patient/")]; !ok {
			t.Errorf("dangling subject %s", ref)
		}
	}
}

func TestDatasetSizesAndSeedTimes(t *testing.T) {
	h := newHarness(t, Config{Patients: 3, EncountersPerPatient: -1, ObservationsPerPatient: 4, SeedAge: time.Hour})
	if got := h.src.Types(); !reflect.DeepEqual(got, []string{"Condition", "Observation", "Patient"}) {
		t.Fatalf("types %v", got)
	}
	if n := len(h.src.Resources("Observation")); n != 12 {
		t.Fatalf("observations %d", n)
	}
	now := h.clock.Now()
	seen := map[string]bool{}
	for _, typ := range h.src.Types() {
		for _, raw := range h.src.Resources(typ) {
			var obj map[string]any
			_ = json.Unmarshal(raw, &obj)
			v, lu := meta(obj)
			ts, err := time.Parse(time.RFC3339, lu)
			if err != nil || v != "1" {
				t.Fatalf("meta %v %v", v, lu)
			}
			if !ts.Before(now) || ts.Before(now.Add(-time.Hour)) {
				t.Errorf("seed lastUpdated %s outside the hour before %s", ts, now)
			}
			if seen[lu] {
				t.Errorf("two seed resources share lastUpdated %s", lu)
			}
			seen[lu] = true
		}
	}
	empty := newHarness(t, Config{Patients: -1})
	if types := empty.src.Types(); len(types) != 0 {
		t.Fatalf("empty dataset has types %v", types)
	}
	if m := empty.waitManifest(empty.kickOff(nil)); len(m.Output) != 0 {
		t.Fatalf("empty export has outputs %+v", m.Output)
	}
}

func TestTypeParameterFilters(t *testing.T) {
	h := newHarness(t, Config{})
	res := h.export(url.Values{"_type": {"Patient,Condition"}})
	if len(res.resources) != 2 || res.count("Patient") != 10 || res.count("Condition") != 10 {
		t.Fatalf("types %v", keys(res.resources))
	}
	if !strings.Contains(res.manifest.Request, "_type=Patient%2CCondition") {
		t.Errorf("request %q lacks the query", res.manifest.Request)
	}
	// Repeated _type parameters add up; a known type without data exports nothing.
	res = h.export(url.Values{"_type": {"Encounter", "Medication"}})
	if len(res.resources) != 1 || res.count("Encounter") != 20 {
		t.Fatalf("types %v", keys(res.resources))
	}
}

func TestSinceAndUntilAreExact(t *testing.T) {
	h := newHarness(t, Config{})
	full := h.export(nil)
	t0 := full.manifest.TransactionTime

	// Changes with a FROZEN clock still get strictly later stamps than t0.
	patientID := anyID(t, h.src, "Patient")
	patient := h.resource("Patient", patientID)
	patient["active"] = false
	if err := h.src.Put(mustJSON(t, patient)); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	conditionID := anyID(t, h.src, "Condition")
	if err := h.src.Delete("Condition", conditionID); err != nil {
		t.Fatal(err)
	}
	newObs := map[string]any{"resourceType": "Observation", "id": "obs-new", "status": "final",
		"code": map[string]any{"text": "new"}}
	if err := h.src.Put(mustJSON(t, newObs)); err != nil {
		t.Fatal(err)
	}

	inc := h.export(url.Values{"_since": {t0}})
	if got := inc.ids(); !reflect.DeepEqual(got, []string{"Observation/obs-new", "Patient/" + patientID}) {
		t.Fatalf("incremental export holds %v", got)
	}
	if !reflect.DeepEqual(inc.deleted, []string{"Condition/" + conditionID}) {
		t.Fatalf("deleted %v", inc.deleted)
	}
	v, lu := meta(inc.resources["Patient"][patientID])
	if v != "2" || lu <= t0 || lu > inc.manifest.TransactionTime {
		t.Fatalf("updated patient meta %s %s (t0 %s, tx %s)", v, lu, t0, inc.manifest.TransactionTime)
	}

	// Nothing changed since the incremental export: an empty, successful export.
	t1 := inc.manifest.TransactionTime
	empty := h.export(url.Values{"_since": {t1}})
	if len(empty.manifest.Output) != 0 || len(empty.manifest.Deleted) != 0 {
		t.Fatalf("export since %s not empty: %+v", t1, empty.manifest)
	}

	// _until cuts the window: only the changes up to and including it.
	_, patientStamp := meta(inc.resources["Patient"][patientID])
	win := h.export(url.Values{"_since": {t0}, "_until": {patientStamp}})
	if got := win.ids(); !reflect.DeepEqual(got, []string{"Patient/" + patientID}) {
		t.Fatalf("window (%s, %s] holds %v", t0, patientStamp, got)
	}
	if len(win.deleted) != 0 { // the deletion came a second later
		t.Fatalf("window deleted %v", win.deleted)
	}
	// The next window picks up the rest.
	rest := h.export(url.Values{"_since": {patientStamp}})
	if got := rest.ids(); !reflect.DeepEqual(got, []string{"Observation/obs-new"}) || len(rest.deleted) != 1 {
		t.Fatalf("window after %s holds %v, deleted %v", patientStamp, got, rest.deleted)
	}

	// A resource deleted and re-created since _since is exported, not listed as deleted.
	if err := h.src.Delete("Observation", "obs-new"); err != nil {
		t.Fatal(err)
	}
	if err := h.src.Put(mustJSON(t, newObs)); err != nil {
		t.Fatal(err)
	}
	again := h.export(url.Values{"_since": {t1}})
	if got := again.ids(); !reflect.DeepEqual(got, []string{"Observation/obs-new"}) || len(again.deleted) != 0 {
		t.Fatalf("re-created resource: %v, deleted %v", got, again.deleted)
	}
	if v, _ := meta(again.resources["Observation"]["obs-new"]); v != "3" {
		t.Fatalf("re-created versionId %s, want 3", v)
	}
	// Without _since there is no deleted list.
	if all := h.export(nil); len(all.manifest.Deleted) != 0 || all.count("Condition") != 9 {
		t.Fatalf("full export: deleted %v, conditions %d", all.manifest.Deleted, all.count("Condition"))
	}
}

func TestSnapshotIsolation(t *testing.T) {
	h := newHarness(t, Config{ExportPolls: 2})
	statusURL := h.kickOff(nil)

	patientID := anyID(t, h.src, "Patient")
	before := h.resource("Patient", patientID)
	changed := h.resource("Patient", patientID)
	changed["gender"] = "other"
	if err := h.src.Put(mustJSON(t, changed)); err != nil {
		t.Fatal(err)
	}
	encID := anyID(t, h.src, "Encounter")
	if err := h.src.Delete("Encounter", encID); err != nil {
		t.Fatal(err)
	}
	if err := h.src.Put(mustJSON(t, map[string]any{"resourceType": "Patient", "id": "late"})); err != nil {
		t.Fatal(err)
	}

	res := h.fetchAll(h.waitManifest(statusURL))
	if !reflect.DeepEqual(res.resources["Patient"][patientID], before) {
		t.Errorf("export shows the change made after kick-off")
	}
	if _, ok := res.resources["Encounter"][encID]; !ok {
		t.Errorf("export lacks the encounter deleted after kick-off")
	}
	if _, ok := res.resources["Patient"]["late"]; ok || res.count("Patient") != 10 {
		t.Errorf("export holds the patient created after kick-off")
	}
	next := h.export(url.Values{"_since": {res.manifest.TransactionTime}})
	if got := next.ids(); !reflect.DeepEqual(got, []string{"Patient/" + patientID, "Patient/late"}) ||
		!reflect.DeepEqual(next.deleted, []string{"Encounter/" + encID}) {
		t.Fatalf("next incremental: %v deleted %v", got, next.deleted)
	}
}

// TestConcurrentIncrementalSyncIsExact replays a client that applies a full export and then
// incremental exports (each _since = the previous transactionTime) while a writer changes the
// data with the real clock: the replica must end up equal to the source.
func TestConcurrentIncrementalSyncIsExact(t *testing.T) {
	h := newHarness(t, Config{Clock: time.Now, Patients: 5, ResourcesPerFile: 4})
	replica := map[string]map[string]any{}
	apply := func(res exportResult) {
		for typ, byID := range res.resources {
			for id, obj := range byID {
				replica[typ+"/"+id] = obj
			}
		}
		for _, ref := range res.deleted {
			delete(replica, ref)
		}
	}
	res := h.export(nil)
	apply(res)

	done := make(chan struct{})
	writerErr := make(chan error, 1)
	go func() {
		defer close(writerErr)
		for i := 0; i < 2000; i++ {
			select {
			case <-done:
				return
			default:
			}
			runtime.Gosched() // let kick-offs interleave with the writes
			// Every write is to a fresh id or changes an older one, so a lost write shows.
			var err error
			switch {
			case i%7 == 6:
				err = h.src.Delete("Patient", "w"+strconv.Itoa(i/3))
				if errors.Is(err, ErrNotFound) {
					err = nil
				}
			case i%3 == 2:
				err = h.src.Put(json.RawMessage(`{"resourceType":"Patient","id":"w` + strconv.Itoa(i/2) + `","gender":"other","birthDate":"2001-01-01"}`))
			default:
				err = h.src.Put(json.RawMessage(`{"resourceType":"Patient","id":"w` + strconv.Itoa(i) + `","birthDate":"2000-01-01"}`))
			}
			if err != nil {
				writerErr <- err
				return
			}
		}
	}()
	for i := 0; i < 15; i++ {
		res = h.export(url.Values{"_since": {res.manifest.TransactionTime}})
		apply(res)
	}
	close(done)
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}
	apply(h.export(url.Values{"_since": {res.manifest.TransactionTime}}))

	want := map[string]map[string]any{}
	for _, typ := range h.src.Types() {
		for id, raw := range h.src.Resources(typ) {
			var obj map[string]any
			_ = json.Unmarshal(raw, &obj)
			want[typ+"/"+id] = obj
		}
	}
	if len(want) != len(replica) {
		t.Fatalf("replica has %d resources, source %d", len(replica), len(want))
	}
	for ref, obj := range want {
		if !reflect.DeepEqual(replica[ref], obj) {
			t.Fatalf("replica differs at %s: %v vs %v", ref, replica[ref], obj)
		}
	}
}

func TestMultipleOutputFiles(t *testing.T) {
	h := newHarness(t, Config{ResourcesPerFile: 7})
	res := h.export(url.Values{"_type": {"Patient,Observation"}})
	var counts []string
	for _, f := range res.manifest.Output {
		counts = append(counts, f.Type+":"+strconv.Itoa(f.Count))
	}
	want := []string{"Patient:7", "Patient:3", "Observation:7", "Observation:7", "Observation:7", "Observation:7", "Observation:2"}
	if !reflect.DeepEqual(counts, want) {
		t.Fatalf("files %v, want %v", counts, want)
	}
	if res.count("Patient") != 10 || res.count("Observation") != 30 {
		t.Fatalf("counts %d %d", res.count("Patient"), res.count("Observation"))
	}
	urls := map[string]bool{}
	for _, f := range res.manifest.Output {
		if urls[f.URL] || !strings.HasPrefix(f.URL, h.base+"/") || !strings.HasSuffix(f.URL, ".ndjson") {
			t.Fatalf("file URL %q", f.URL)
		}
		urls[f.URL] = true
	}
}

func TestProgressHeaders(t *testing.T) {
	h := newHarness(t, Config{ExportPolls: 2, RetryAfter: 2500 * time.Millisecond})
	statusURL := h.kickOff(nil)
	for _, wantProgress := range []string{"33%", "66%"} {
		status, hdr, _ := h.do(http.MethodGet, statusURL, nil, nil)
		if status != http.StatusAccepted || hdr.Get("Retry-After") != "3" || hdr.Get("X-Progress") != wantProgress {
			t.Fatalf("poll: %d Retry-After %q X-Progress %q", status, hdr.Get("Retry-After"), hdr.Get("X-Progress"))
		}
	}
	if status, _, _ := h.do(http.MethodGet, statusURL, nil, nil); status != http.StatusOK {
		t.Fatalf("third poll: %d", status)
	}
	// The manifest can be fetched again.
	if status, _, _ := h.do(http.MethodGet, statusURL, nil, nil); status != http.StatusOK {
		t.Fatalf("fourth poll: %d", status)
	}

	// ExportDelay runs on the injected clock; files are not served before completion.
	d := newHarness(t, Config{ExportDelay: time.Minute})
	statusURL = d.kickOff(nil)
	status, hdr, _ := d.do(http.MethodGet, statusURL, nil, nil)
	if status != http.StatusAccepted || hdr.Get("Retry-After") != "1" || hdr.Get("X-Progress") != "0%" {
		t.Fatalf("delayed poll: %d %q %q", status, hdr.Get("Retry-After"), hdr.Get("X-Progress"))
	}
	id := statusURL[strings.LastIndex(statusURL, "=")+1:]
	if status, _, _ := d.do(http.MethodGet, d.base+"/_bulk-files/"+id+"/Patient-1.ndjson", nil, nil); status != http.StatusNotFound {
		t.Fatalf("file before completion: %d", status)
	}
	d.clock.Advance(30 * time.Second)
	if _, hdr, _ := d.do(http.MethodGet, statusURL, nil, nil); hdr.Get("X-Progress") != "50%" {
		t.Fatalf("half-way progress %q", hdr.Get("X-Progress"))
	}
	d.clock.Advance(30 * time.Second)
	if status, _, _ := d.do(http.MethodGet, statusURL, nil, nil); status != http.StatusOK {
		t.Fatalf("after the delay: %d", status)
	}
	if infos := d.src.Exports(); len(infos) != 1 || infos[0].State != "completed" || infos[0].Polls != 3 {
		t.Fatalf("exports %+v", infos)
	}
}

func TestDeleteExport(t *testing.T) {
	h := newHarness(t, Config{})
	statusURL := h.kickOff(nil)
	m := h.waitManifest(statusURL)
	status, _, body := h.do(http.MethodDelete, statusURL, nil, nil)
	if status != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	outcomeDiagnostics(t, body)
	for _, u := range []string{statusURL, m.Output[0].URL} {
		if status, _, body := h.do(http.MethodGet, u, nil, nil); status != http.StatusNotFound {
			t.Fatalf("GET %s after DELETE: %d", u, status)
		} else {
			outcomeDiagnostics(t, body)
		}
	}
	if status, _, _ := h.do(http.MethodDelete, statusURL, nil, nil); status != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", status)
	}
	if status, _, _ := h.do(http.MethodGet, h.base+"/$export-poll-status?_jobId=nope", nil, nil); status != http.StatusNotFound {
		t.Fatalf("unknown export: %d", status)
	}
	// An export in progress can be deleted too.
	slow := newHarness(t, Config{ExportPolls: 5})
	statusURL = slow.kickOff(nil)
	if status, _, _ := slow.do(http.MethodDelete, statusURL, nil, nil); status != http.StatusAccepted {
		t.Fatalf("DELETE in progress: %d", status)
	}
	if status, _, _ := slow.do(http.MethodGet, statusURL, nil, nil); status != http.StatusNotFound {
		t.Fatalf("poll after DELETE: %d", status)
	}
	c := h.src.Counters()
	if c.ExportsStarted != 1 || c.ExportsDeleted != 1 || c.StatusPolls != 1 {
		t.Fatalf("counters %+v", c)
	}
	if infos := h.src.Exports(); infos[0].State != "deleted" || infos[0].OutputResources != 70 {
		t.Fatalf("export info %+v", infos[0])
	}
}

func TestKickOffRejections(t *testing.T) {
	h := newHarness(t, Config{})
	cases := []struct {
		name   string
		header http.Header
		query  string
		status int
		text   string
	}{
		{"no Prefer", http.Header{"Accept": {"application/fhir+json"}}, "", 400, "respond-async"},
		{"wrong Prefer", http.Header{"Prefer": {"respond-sync"}}, "", 400, "respond-async"},
		{"HTML Accept", http.Header{"Accept": {"text/html"}, "Prefer": {"respond-async"}}, "", 400, "Accept"},
		{"unknown type", asyncHeaders(), "_type=Patient,Foo", 400, `"Foo"`},
		{"empty _type", asyncHeaders(), "_type=", 400, "_type"},
		{"date only _since", asyncHeaders(), "_since=2025-01-01", 400, "_since"},
		{"no zone _since", asyncHeaders(), "_since=2025-01-01T00:00:00", 400, "_since"},
		{"garbage _until", asyncHeaders(), "_until=yesterday", 400, "_until"},
		{"impossible date", asyncHeaders(), "_since=2025-02-30T00:00:00Z", 400, "_since"},
		{"repeated _since", asyncHeaders(), "_since=2025-01-01T00:00:00Z&_since=2025-01-02T00:00:00Z", 400, "once"},
		{"_until before _since", asyncHeaders(), "_since=2025-01-02T00:00:00Z&_until=2025-01-01T00:00:00Z", 400, "before"},
		{"csv", asyncHeaders(), "_outputFormat=text/csv", 400, "_outputFormat"},
		{"patient", asyncHeaders(), "patient=Patient/1", 400, "patient"},
		{"bad element", asyncHeaders(), "_elements=Patient.name.given", 400, "root elements"},
		{"bad type filter", asyncHeaders(), "_typeFilter=status=final", 400, "_typeFilter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := h.base + "/$export"
			if tc.query != "" {
				u += "?" + tc.query
			}
			status, hdr, body := h.do(http.MethodGet, u, tc.header, nil)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/fhir+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if d := outcomeDiagnostics(t, body); !strings.Contains(d, tc.text) {
				t.Errorf("diagnostics %q lack %q", d, tc.text)
			}
		})
	}
	if c := h.src.Counters(); c.ExportsStarted != 0 || c.KickOffsRejected != int64(len(cases)) {
		t.Fatalf("counters %+v", c)
	}
}

func TestKickOffLeniency(t *testing.T) {
	h := newHarness(t, Config{})
	for name, tc := range map[string]struct {
		header http.Header
		query  string
	}{
		"no Accept":               {http.Header{"Prefer": {"respond-async"}}, ""},
		"Accept */*":              {http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async"}}, ""},
		"Accept with params":      {http.Header{"Accept": {"application/fhir+json; charset=utf-8"}, "Prefer": {"respond-async"}}, ""},
		"lenient handling":        {http.Header{"Prefer": {"respond-async, handling=lenient"}}, ""},
		"ndjson":                  {asyncHeaders(), "_outputFormat=ndjson"},
		"application/ndjson":      {asyncHeaders(), "_outputFormat=application%2Fndjson"},
		"unencoded plus":          {asyncHeaders(), "_outputFormat=application/fhir+ndjson&_since=2025-01-01T10:00:00.123+10:00"},
		"Pathling instant format": {asyncHeaders(), "_since=2025-01-01T00:00:00.000Z&_until=2030-01-01T00:00:00.000Z"},
		"unknown parameter":       {asyncHeaders(), "_mode=x&includeAssociatedData=LatestProvenanceResources"},
		"percent-encoded dollar":  {asyncHeaders(), ""},
	} {
		t.Run(name, func(t *testing.T) {
			u := h.base + "/$export"
			if name == "percent-encoded dollar" {
				u = h.base + "/%24export"
			}
			if tc.query != "" {
				u += "?" + tc.query
			}
			if status, _, body := h.do(http.MethodGet, u, tc.header, nil); status != http.StatusAccepted {
				t.Fatalf("status %d: %s", status, body)
			}
		})
	}
	infos := h.src.Exports()
	var sawSince bool
	for _, info := range infos {
		if info.Since == "2025-01-01T10:00:00.123+10:00" {
			sawSince = true
		}
	}
	if !sawSince {
		t.Fatalf("the unencoded '+' offset was not read as +10:00: %+v", infos)
	}
}

func TestPostKickOff(t *testing.T) {
	h := newHarness(t, Config{})
	h.clock.Advance(time.Hour)
	if err := h.src.Put(json.RawMessage(`{"resourceType":"Patient","id":"new"}`)); err != nil {
		t.Fatal(err)
	}
	post := func(contentType, body string) (int, http.Header, []byte) {
		hdr := asyncHeaders()
		hdr.Set("Content-Type", contentType)
		return h.do(http.MethodPost, h.base+"/$export", hdr, strings.NewReader(body))
	}
	since := h.clock.Now().Add(-time.Minute).Format(instantLayout)
	status, hdr, body := post("application/fhir+json", `{"resourceType":"Parameters","parameter":[
		{"name":"_type","valueString":"Patient"},{"name":"_type","valueString":"Observation"},
		{"name":"_since","valueInstant":"`+since+`"},{"name":"_outputFormat","valueString":"application/fhir+ndjson"},
		{"name":"ignoredByServer","valueBoolean":true}]}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST kick-off: %d %s", status, body)
	}
	res := h.fetchAll(h.waitManifest(hdr.Get("Content-Location")))
	if got := res.ids(); !reflect.DeepEqual(got, []string{"Patient/new"}) {
		t.Fatalf("POST export holds %v", got)
	}
	if res.manifest.Request != h.base+"/$export" {
		t.Fatalf("request %q", res.manifest.Request)
	}
	infos := h.src.Exports()
	if info := infos[len(infos)-1]; info.Method != "POST" || !reflect.DeepEqual(info.Types, []string{"Patient", "Observation"}) {
		t.Fatalf("export info %+v", info)
	}

	for name, tc := range map[string]struct {
		contentType, body string
		status            int
	}{
		"valueDateTime _since": {"application/fhir+json", `{"resourceType":"Parameters","parameter":[{"name":"_since","valueDateTime":"2025-01-01"}]}`, 400},
		"not Parameters":       {"application/fhir+json", `{"resourceType":"Bundle"}`, 400},
		"not JSON":             {"application/fhir+json", `nope`, 400},
		"form body":            {"application/x-www-form-urlencoded", `_type=Patient`, 415},
		"bad instant":          {"application/json", `{"resourceType":"Parameters","parameter":[{"name":"_since","valueInstant":"2025"}]}`, 400},
	} {
		if status, _, body := post(tc.contentType, tc.body); status != tc.status {
			t.Errorf("%s: status %d, want %d (%s)", name, status, tc.status, body)
		}
	}
}

func TestElementsTrimResources(t *testing.T) {
	h := newHarness(t, Config{Patients: 2})
	res := h.export(url.Values{"_type": {"Patient,Observation"}, "_elements": {"Patient.gender,birthDate"}})
	for _, p := range res.resources["Patient"] {
		if got := sortedObjKeys(p); !reflect.DeepEqual(got, []string{"birthDate", "gender", "id", "meta", "resourceType"}) {
			t.Fatalf("Patient keys %v", got)
		}
		if !hasSubsettedTag(p) {
			t.Fatalf("Patient not tagged SUBSETTED: %v", p["meta"])
		}
	}
	for _, o := range res.resources["Observation"] {
		// birthDate does not apply; the mandatory status and code stay.
		if got := sortedObjKeys(o); !reflect.DeepEqual(got, []string{"code", "id", "meta", "resourceType", "status"}) {
			t.Fatalf("Observation keys %v", got)
		}
	}
	res = h.export(url.Values{"_type": {"Observation"}, "_elements": {"value,subject"}})
	for _, o := range res.resources["Observation"] {
		if _, ok := o["valueQuantity"]; !ok {
			t.Fatalf("_elements=value dropped valueQuantity: %v", o)
		}
	}
	// The store is untouched.
	for _, raw := range h.src.Resources("Patient") {
		if strings.Contains(string(raw), "SUBSETTED") {
			t.Fatal("the store was modified")
		}
	}
}

func TestTypeFilterIsReportedAsIgnored(t *testing.T) {
	h := newHarness(t, Config{})
	res := h.export(url.Values{"_type": {"Observation"}, "_typeFilter": {"Observation?status=final"}})
	if res.count("Observation") != 30 {
		t.Fatalf("observations %d", res.count("Observation"))
	}
	if len(res.manifest.Error) != 1 || res.manifest.Error[0].Type != "OperationOutcome" {
		t.Fatalf("error files %+v", res.manifest.Error)
	}
	lines := h.download(res.manifest.Error[0].URL)
	if len(lines) != 1 || !strings.Contains(mustString(t, lines[0]), "_typeFilter") {
		t.Fatalf("error file %v", lines)
	}
}

func TestDeterministicDataset(t *testing.T) {
	a := newHarness(t, Config{Seed: 42, Patients: 4})
	b := newHarness(t, Config{Seed: 42, Patients: 4})
	c := newHarness(t, Config{Seed: 43, Patients: 4})
	for _, typ := range []string{"Patient", "Encounter", "Observation", "Condition"} {
		ra, rb := a.src.Resources(typ), b.src.Resources(typ)
		if len(ra) == 0 || !reflect.DeepEqual(ra, rb) {
			t.Fatalf("%s differs between two servers with the same seed", typ)
		}
		for id := range ra {
			if _, ok := c.src.Resources(typ)[id]; ok {
				t.Fatalf("%s/%s also generated by another seed", typ, id)
			}
		}
	}
	// Byte-identical files, in the same order.
	ma, mb := a.waitManifest(a.kickOff(nil)), b.waitManifest(b.kickOff(nil))
	for i := range ma.Output {
		_, _, fa := a.do(http.MethodGet, ma.Output[i].URL, nil, nil)
		_, _, fb := b.do(http.MethodGet, mb.Output[i].URL, nil, nil)
		if string(fa) != string(fb) {
			t.Fatalf("file %d differs", i)
		}
	}
	// Reset restores exactly the initial data.
	before := a.src.Resources("Patient")
	id := anyID(t, a.src, "Patient")
	if err := a.src.Delete("Patient", id); err != nil {
		t.Fatal(err)
	}
	a.src.Reset()
	if !reflect.DeepEqual(before, a.src.Resources("Patient")) {
		t.Fatal("Reset did not restore the initial patients")
	}
}

func TestClosedServerRefuses(t *testing.T) {
	h := newHarness(t, Config{})
	h.src.Close()
	if status, _, _ := h.do(http.MethodGet, h.base+"/$export", asyncHeaders(), nil); status != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %d", status)
	}
}

func TestMetadataAndUnknownPaths(t *testing.T) {
	h := newHarness(t, Config{})
	status, _, body := h.do(http.MethodGet, h.base+"/metadata", nil, nil)
	if status != 200 || !strings.Contains(string(body), `"name":"export"`) {
		t.Fatalf("metadata: %d %s", status, body)
	}
	// What Pathling requests when given an exportUrl that already ends in $export.
	if status, _, body := h.do(http.MethodGet, h.base+"/$export/$export", asyncHeaders(), nil); status != 404 {
		t.Fatalf("$export/$export: %d %s", status, body)
	}
	if status, _, _ := h.do(http.MethodGet, h.base+"/.well-known/smart-configuration", nil, nil); status != 404 {
		t.Fatalf("smart-configuration without auth: %d", status)
	}
}

// ids lists an export's resources as sorted "Type/id".
func (r exportResult) ids() []string {
	var out []string
	for typ, byID := range r.resources {
		for id := range byID {
			out = append(out, typ+"/"+id)
		}
	}
	sort.Strings(out)
	return out
}

// resource returns a stored resource decoded.
func (h *harness) resource(typ, id string) map[string]any {
	h.t.Helper()
	raw, ok := h.src.Get(typ, id)
	if !ok {
		h.t.Fatalf("no %s/%s", typ, id)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		h.t.Fatal(err)
	}
	return obj
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedObjKeys(m map[string]any) []string { return keys(m) }

func hasSubsettedTag(obj map[string]any) bool {
	tags, _ := obj["meta"].(map[string]any)["tag"].([]any)
	for _, tag := range tags {
		if tag.(map[string]any)["code"] == "SUBSETTED" {
			return true
		}
	}
	return false
}

func mustString(t *testing.T, v any) string {
	t.Helper()
	return string(mustJSON(t, v))
}
