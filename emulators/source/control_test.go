package source

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestControlAPI(t *testing.T) {
	h := newHarness(t, Config{Patients: 2})
	ctl := h.http.URL + "/_source"
	jsonHdr := http.Header{"Content-Type": {"application/json"}}

	status, _, body := h.do(http.MethodPut, ctl+"/resources/Patient/p1", jsonHdr, strings.NewReader(`{"gender":"female"}`))
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var created map[string]any
	_ = json.Unmarshal(body, &created)
	if v, lu := meta(created); v != "1" || lu == "" || created["resourceType"] != "Patient" || created["id"] != "p1" {
		t.Fatalf("created %s", body)
	}
	h.clock.Advance(time.Second)
	status, _, body = h.do(http.MethodPut, ctl+"/resources/Patient/p1", jsonHdr,
		strings.NewReader(`{"resourceType":"Patient","id":"p1","gender":"male","meta":{"versionId":"99","tag":[{"code":"keep"}]}}`))
	if status != http.StatusOK {
		t.Fatalf("update: %d %s", status, body)
	}
	var updated map[string]any
	_ = json.Unmarshal(body, &updated)
	if v, lu := meta(updated); v != "2" || lu != h.clock.Now().Format(instantLayout) {
		t.Fatalf("updated meta %s %s", v, lu)
	}
	if !strings.Contains(string(body), `"tag":[{"code":"keep"}]`) {
		t.Fatalf("other meta elements lost: %s", body)
	}
	for _, tc := range []struct{ path, body string }{
		{"/resources/Patient/p1", `{"resourceType":"Observation"}`},
		{"/resources/Patient/p2", `{"id":"p3"}`},
		{"/resources/Patient/bad_id!", `{}`},
		{"/resources/Nope/x", `{}`},
		{"/resources/Patient/p1", `[1]`},
	} {
		if status, _, body := h.do(http.MethodPut, ctl+tc.path, jsonHdr, strings.NewReader(tc.body)); status != http.StatusBadRequest {
			t.Errorf("PUT %s %s: %d %s", tc.path, tc.body, status, body)
		}
	}

	status, _, body = h.do(http.MethodGet, ctl+"/resources/Patient", nil, nil)
	var list struct {
		Total     int               `json:"total"`
		Resources []ResourceVersion `json:"resources"`
		Deleted   []ResourceVersion `json:"deleted"`
	}
	if err := json.Unmarshal(body, &list); err != nil || status != 200 || list.Total != 3 {
		t.Fatalf("list: %d %s", status, body)
	}

	if status, _, _ := h.do(http.MethodDelete, ctl+"/resources/Patient/p1", nil, nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	if status, _, _ := h.do(http.MethodDelete, ctl+"/resources/Patient/p1", nil, nil); status != http.StatusNotFound {
		t.Fatalf("second delete: %d", status)
	}
	if status, _, _ := h.do(http.MethodGet, ctl+"/resources/Patient/p1", nil, nil); status != http.StatusNotFound {
		t.Fatalf("get deleted: %d", status)
	}
	_, _, body = h.do(http.MethodGet, ctl+"/resources/Patient", nil, nil)
	_ = json.Unmarshal(body, &list)
	if list.Total != 2 || len(list.Deleted) != 1 || list.Deleted[0].ID != "p1" || list.Deleted[0].VersionID != "3" {
		t.Fatalf("list after delete: %s", body)
	}
	_, _, body = h.do(http.MethodGet, ctl+"/resources", nil, nil)
	if !strings.Contains(string(body), `"Patient":2`) || !strings.Contains(string(body), `"Observation":6`) {
		t.Fatalf("types: %s", body)
	}

	h.waitManifest(h.kickOff(url.Values{"_type": {"Patient"}}))
	_, _, body = h.do(http.MethodGet, ctl+"/exports", nil, nil)
	var exports struct{ Exports []ExportInfo }
	if err := json.Unmarshal(body, &exports); err != nil || len(exports.Exports) != 1 ||
		exports.Exports[0].State != "completed" || exports.Exports[0].OutputResources != 2 {
		t.Fatalf("exports: %s", body)
	}
	_, _, body = h.do(http.MethodGet, ctl+"/counters", nil, nil)
	var c Counters
	if err := json.Unmarshal(body, &c); err != nil || c.ExportsStarted != 1 || c.ResourceWrites != 2 || c.ResourceDeletes != 1 || c.StatusPolls != 1 {
		t.Fatalf("counters: %s", body)
	}

	if status, _, _ := h.do(http.MethodPost, ctl+"/reset", nil, nil); status != http.StatusNoContent {
		t.Fatalf("reset: %d", status)
	}
	if len(h.src.Resources("Patient")) != 2 || len(h.src.Exports()) != 0 || h.src.Counters() != (Counters{}) {
		t.Fatalf("reset left state behind")
	}
	// After a reset, new writes are still stamped after everything exported before.
	if err := h.src.Put(json.RawMessage(`{"resourceType":"Patient","id":"after"}`)); err != nil {
		t.Fatal(err)
	}
	_, lu := meta(h.resource("Patient", "after"))
	if lu <= updated["meta"].(map[string]any)["lastUpdated"].(string) {
		t.Fatalf("stamp after reset %s went backwards", lu)
	}
}

func TestPutValidation(t *testing.T) {
	h := newHarness(t, Config{Patients: -1})
	for _, bad := range []string{`nope`, `{}`, `{"resourceType":"Patient"}`, `{"resourceType":"Unicorn","id":"x"}`,
		`{"resourceType":"Patient","id":"x","meta":[]}`, `{"resourceType":"Patient","id":"x"} {}`} {
		if err := h.src.Put(json.RawMessage(bad)); !errors.Is(err, ErrInvalidResource) {
			t.Errorf("Put(%s) = %v", bad, err)
		}
	}
	if err := h.src.Delete("Patient", "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete missing = %v", err)
	}
	// Numbers are kept as written.
	if err := h.src.Put(json.RawMessage(`{"resourceType":"Observation","id":"o","valueQuantity":{"value":1.50}}`)); err != nil {
		t.Fatal(err)
	}
	raw, _ := h.src.Get("Observation", "o")
	if !strings.HasPrefix(string(raw), `{"resourceType":"Observation",`) || !strings.Contains(string(raw), `"value":1.50`) {
		t.Fatalf("stored %s", raw)
	}
}

func TestFaults(t *testing.T) {
	h := newHarness(t, Config{})
	ctl := h.http.URL + "/_source/faults"
	if status, _, body := h.do(http.MethodPost, ctl, nil, strings.NewReader(`{"stage":"kickoff","status":429,"retryAfterSeconds":2}`)); status != http.StatusNoContent {
		t.Fatalf("add fault: %d %s", status, body)
	}
	status, hdr, _ := h.do(http.MethodGet, h.base+"/$export", asyncHeaders(), nil)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") != "2" {
		t.Fatalf("faulted kick-off: %d %q", status, hdr.Get("Retry-After"))
	}
	statusURL := h.kickOff(nil) // the fault was used up

	if err := h.src.InjectFault(Fault{Stage: StageStatus, Status: 503, Count: 2}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if status, _, _ := h.do(http.MethodGet, statusURL, nil, nil); status != http.StatusServiceUnavailable {
			t.Fatalf("faulted poll %d: %d", i, status)
		}
	}
	m := h.waitManifest(statusURL)

	if err := h.src.InjectFault(Fault{Stage: StageDownload, Status: 500}); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := h.do(http.MethodGet, m.Output[0].URL, nil, nil); status != http.StatusInternalServerError {
		t.Fatalf("faulted download: %d", status)
	}
	h.download(m.Output[0].URL)

	if err := h.src.InjectFault(Fault{Stage: StageExport, Status: 500, Diagnostics: "disk full"}); err != nil {
		t.Fatal(err)
	}
	failed := h.kickOff(nil)
	for i := 0; i < 2; i++ { // the failure sticks
		status, _, body := h.do(http.MethodGet, failed, nil, nil)
		if status != http.StatusInternalServerError || outcomeDiagnostics(t, body) != "disk full" {
			t.Fatalf("failed export poll: %d %s", status, body)
		}
	}
	if infos := h.src.Exports(); infos[len(infos)-1].State != "failed" {
		t.Fatalf("state %s", infos[len(infos)-1].State)
	}

	for _, bad := range []string{`{"stage":"nowhere","status":500}`, `{"stage":"status","status":200}`, `{"stage":"status","status":500,"extra":1}`} {
		if status, _, _ := h.do(http.MethodPost, ctl, nil, strings.NewReader(bad)); status != http.StatusBadRequest {
			t.Errorf("fault %s accepted: %d", bad, status)
		}
	}
	_ = h.src.InjectFault(Fault{Stage: StageKickOff, Status: 500})
	if status, _, _ := h.do(http.MethodDelete, ctl, nil, nil); status != http.StatusNoContent {
		t.Fatalf("clear faults: %d", status)
	}
	h.kickOff(nil)
	if got := h.src.Counters().FaultsServed; got != 5 {
		t.Fatalf("FaultsServed %d", got)
	}
}
