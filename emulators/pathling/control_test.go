package pathling

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestControlAPI(t *testing.T) {
	h := scriptedHarness(t, Config{})
	ctl := h.srv.URL + "/_emulator/"
	jsonHdr := http.Header{"Content-Type": {"application/json"}}

	for _, bad := range []string{`{"polls":1,"bogus":true}`, `{"outcome":"maybe"}`, `{"duration":"soon"}`, `{"polls":-1}`} {
		if r := do(t, http.MethodPut, ctl+"script", jsonHdr, []byte(bad)); r.status != 400 {
			t.Errorf("PUT script %s: want 400, got %s", bad, r)
		}
	}
	if r := do(t, http.MethodPut, ctl+"script", jsonHdr, []byte(`{"polls":1,"outcome":"fail","failure":"System error in bulk export"}`)); r.status != 204 {
		t.Fatalf("PUT script: %s", r)
	}
	slow := srcURL + "/slow"
	if r := do(t, http.MethodPost, ctl+"scripts", jsonHdr, []byte(`{"exportUrl":"`+slow+`","duration":"1h","importAfter":"30m"}`)); r.status != 204 {
		t.Fatalf("POST scripts: %s", r)
	}
	r := do(t, http.MethodGet, ctl+"scripts", nil, nil)
	var scripts struct {
		Default     Script            `json:"default"`
		ByExportURL map[string]Script `json:"byExportUrl"`
	}
	if err := json.Unmarshal(r.body, &scripts); err != nil || scripts.Default.Polls != 1 || scripts.ByExportURL[slow].ImportAfter.Minutes() != 30 {
		t.Fatalf("GET scripts: %s (%v)", r, err)
	}

	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	slowLoc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(slow)))
	if r := poll(t, loc, nil); r.status != 202 {
		t.Fatalf("want 202, got %s", r)
	}
	wantError(t, poll(t, loc, nil), 400, "Ping and pull import failed: System error in bulk export")
	if r := poll(t, slowLoc, nil); r.status != 202 {
		t.Fatalf("the per-URL script must apply: %s", r)
	}

	if r := do(t, http.MethodPost, ctl+"inject", jsonHdr, []byte(`{"target":"poll","status":503,"retryAfter":"3","jobId":"`+jobID(slowLoc)+`"}`)); r.status != 204 {
		t.Fatalf("inject: %s", r)
	}
	if r := poll(t, loc, nil); r.status != 400 {
		t.Fatalf("an injection for another job must not apply: %s", r)
	}
	if r := poll(t, slowLoc, nil); r.status != 503 || r.header.Get("Retry-After") != "3" {
		t.Fatalf("injected poll: %s", r)
	}
	if r := do(t, http.MethodPost, ctl+"inject", jsonHdr, []byte(`{"target":"poll","status":99}`)); r.status != 400 {
		t.Fatalf("bad inject: %s", r)
	}

	r = do(t, http.MethodGet, ctl+"counters", nil, nil)
	var c Counters
	if err := json.Unmarshal(r.body, &c); err != nil || c.KickOffs != 2 || c.JobsCreated != 2 || c.Jobs[jobID(loc)].Polls != 3 ||
		c.Jobs[jobID(slowLoc)].InjectedPolls != 1 || len(c.Requests) != 2 {
		t.Fatalf("counters: %s", r)
	}

	r = do(t, http.MethodGet, ctl+"jobs", nil, nil)
	var jobs struct{ Jobs []JobInfo }
	if err := json.Unmarshal(r.body, &jobs); err != nil || len(jobs.Jobs) != 2 {
		t.Fatalf("jobs: %s", r)
	}
	states := map[string]JobState{}
	for _, j := range jobs.Jobs {
		states[j.ID] = j.State
	}
	if states[jobID(loc)] != JobFailed || states[jobID(slowLoc)] != JobRunning {
		t.Fatalf("job states %v", states)
	}

	if r := do(t, http.MethodPost, ctl+"restart", nil, nil); r.status != 204 {
		t.Fatalf("restart: %s", r)
	}
	wantError(t, poll(t, slowLoc, nil), 404, "Job ID not found")
	if r := do(t, http.MethodGet, ctl+"store", nil, nil); r.status != 200 || string(r.body) != `{"types":{},"version":""}` {
		t.Fatalf("store: %s", r)
	}
	if r := do(t, http.MethodGet, ctl+"store/Patient", nil, nil); r.status != 404 {
		t.Fatalf("store/Patient: %s", r)
	}

	if r := do(t, http.MethodPost, ctl+"reset", nil, nil); r.status != 204 {
		t.Fatalf("reset: %s", r)
	}
	if c := h.emu.Counters(); c.KickOffs != 0 || len(c.Jobs) != 0 {
		t.Fatalf("counters after reset: %+v", c)
	}
	if r := do(t, http.MethodGet, ctl+"nope", nil, nil); r.status != 404 {
		t.Fatalf("unknown endpoint: %s", r)
	}
}

func TestControlStoreAfterPull(t *testing.T) {
	fs := newFakeSource(t)
	fs.setFiles(map[string][]string{"Patient": {patients("p1", "p2")}})
	h := pullHarness(t, fs, Config{})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(fs.base())))
	pollUntilDone(t, loc, nil)
	r := do(t, http.MethodGet, h.srv.URL+"/_emulator/store/Patient", nil, nil)
	var got struct {
		Count     int               `json:"count"`
		Resources []json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil || got.Count != 2 || len(got.Resources) != 2 {
		t.Fatalf("store/Patient: %s", r)
	}
	// Reset empties the store; Restart does not.
	h.emu.Restart()
	if h.emu.ResourceCount("Patient") != 2 {
		t.Fatal("restart must keep the tables")
	}
	h.emu.Reset()
	if len(h.emu.ResourceTypes()) != 0 {
		t.Fatal("reset must empty the store")
	}
}

func TestControlClearInjections(t *testing.T) {
	h := scriptedHarness(t, Config{})
	ctl := h.srv.URL + "/_emulator/"
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	if r := do(t, http.MethodPost, ctl+"inject", jsonHdr, []byte(`{"target":"poll","status":503,"count":1000}`)); r.status != 204 {
		t.Fatalf("inject: %s", r)
	}
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam(srcURL)))
	if r := poll(t, loc, nil); r.status != 503 {
		t.Fatalf("injected poll: %s", r)
	}
	if r := do(t, http.MethodDelete, ctl+"injections", nil, nil); r.status != 204 {
		t.Fatalf("DELETE injections: %s", r)
	}
	if r := do(t, http.MethodGet, ctl+"injections", nil, nil); r.status != 200 || string(r.body) != `{"injections":[]}`+"\n" && string(r.body) != `{"injections":[]}` {
		t.Fatalf("GET injections after DELETE: %s", r)
	}
	if r := poll(t, loc, nil); r.status == 503 {
		t.Fatalf("the outage must end with DELETE injections: %s", r)
	}
}
