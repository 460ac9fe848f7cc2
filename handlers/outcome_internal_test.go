package handlers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// The echo rules of outcomeBody: a run echoes what it sent to Pathling (since
// resolved), a request that never ran echoes what it asked for and has no
// times; credentials never show.
func TestOutcomeBodyEchoes(t *testing.T) {
	started := time.Date(2026, 1, 15, 2, 0, 0, 0, time.UTC)
	finished := started.Add(90 * time.Second)
	since := started.Add(-time.Hour)
	req := messages.SyncRequested{Since: "auto", SaveMode: "merge", CorrelationID: "c1", RequestedBy: "cron"}
	run := &Run{RunID: "run-1", RequestID: "r1", Target: "t1", Request: req, Attempts: 2, Polls: 3, StartedAt: started,
		Params: ImportParams{ExportURL: "http://user:pw@src/fhir", SaveMode: "merge", Types: []string{"Patient"}, Since: &since}}

	body, err := outcomeBody(runEcho(run), completion("http://p/$job?id=1", JobStatus{Outputs: 4, TransactionTime: "tt"}, false, "wm"), finished)
	if err != nil {
		t.Fatal(err)
	}
	var c messages.SyncCompleted
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.RunID != "run-1" || c.ExportURL != "http://src/fhir" || c.Since != messages.FormatInstant(since) ||
		c.Attempts != 2 || c.Polls != 3 || c.DurationMs != 90000 || c.Outputs != 4 || c.PathlingJob != "http://p/$job?id=1" ||
		c.Watermark != "wm" || c.CorrelationID != "c1" || c.RequestedBy != "cron" || !c.FinishedAt.Equal(finished) {
		t.Errorf("SyncCompleted of a run: %s", body)
	}

	body, err = outcomeBody(runEcho(run), failure(messages.ReasonRejected, false, "no", &PathlingError{HTTPStatus: 400,
		OperationOutcome: json.RawMessage(`{"resourceType":"OperationOutcome"}`)}), finished)
	if err != nil {
		t.Fatal(err)
	}
	var f messages.SyncFailed
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatal(err)
	}
	if f.RunID != "run-1" || f.Reason != messages.ReasonRejected || f.HTTPStatus != 400 || len(f.OperationOutcome) == 0 ||
		!f.StartedAt.Equal(started) || !f.FinishedAt.Equal(finished) || f.Since != messages.FormatInstant(since) {
		t.Errorf("SyncFailed of a run: %s", body)
	}

	in := intake{requestID: "r2", target: "t1", req: messages.SyncRequested{ExportURL: "http://user:pw@src/fhir", Since: "auto", SaveMode: "merge"}}
	res := failure(messages.ReasonConflict, true, "busy", nil)
	res.runningRequestID = "r1"
	body, err = outcomeBody(intakeEcho(in), res, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	f = messages.SyncFailed{}
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatal(err)
	}
	if f.RunID != "" || f.ExportURL != "http://src/fhir" || f.Since != "auto" || f.RunningRequestID != "r1" ||
		!f.StartedAt.IsZero() || !f.FinishedAt.IsZero() {
		t.Errorf("SyncFailed of a refusal: %s", body)
	}
}
