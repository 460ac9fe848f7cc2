package messages_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

func TestOutcomeIDs(t *testing.T) {
	if got := messages.CompletedID("PATHLING_SYNC:42"); got != "PATHLING_SYNC:42/completed" {
		t.Errorf("CompletedID = %q", got)
	}
	if got := messages.FailedID("req-1"); got != "req-1/failed" {
		t.Errorf("FailedID = %q", got)
	}
}

func TestReasons(t *testing.T) {
	want := []string{"invalid_request", "unknown_target", "export_url_not_allowed", "conflict", "rejected",
		"import_failed", "job_lost", "timeout", "unauthorized", "unavailable", "lock_lost", "cancelled"}
	var got []string
	for _, r := range messages.Reasons() {
		got = append(got, string(r))
		if !r.Valid() {
			t.Errorf("%q not Valid", r)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Reasons = %v, want %v", got, want)
	}
	if messages.Reason("boom").Valid() || messages.Reason("").Valid() {
		t.Error("unknown reason is Valid")
	}
}

func TestOutcomeTimesAreUTC(t *testing.T) {
	zone := time.FixedZone("AEST", 10*3600)
	start := time.Date(2025, 2, 1, 12, 0, 0, 123456789, zone)
	completed := messages.SyncCompleted{RequestID: "r", StartedAt: start, FinishedAt: start.Add(time.Second)}
	b, err := json.Marshal(completed)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"startedAt":"2025-02-01T02:00:00.123456789Z"`, `"finishedAt":"2025-02-01T02:00:01.123456789Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("SyncCompleted JSON %s lacks %s", b, want)
		}
	}
	// A pointer marshals the same way.
	if pb, _ := json.Marshal(&completed); string(pb) != string(b) {
		t.Errorf("pointer encoding differs:\n%s\n%s", pb, b)
	}

	failed := messages.SyncFailed{RequestID: "r", Target: "t", Reason: messages.ReasonTimeout, StartedAt: start}
	b, err = json.Marshal(failed)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"startedAt":"2025-02-01T02:00:00.123456789Z"`) {
		t.Errorf("SyncFailed JSON %s has no UTC startedAt", b)
	}
	if strings.Contains(string(b), "finishedAt") {
		t.Errorf("SyncFailed JSON %s has a zero finishedAt", b)
	}
}

func TestFailedEncodingOmitsOptionalFields(t *testing.T) {
	b, err := json.Marshal(messages.SyncFailed{RequestID: "r", Target: "t", Reason: messages.ReasonInvalidRequest, Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"requestId":"r","target":"t","reason":"invalid_request","retryable":false,"message":"m","attempts":0}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestFailedFor(t *testing.T) {
	req := messages.SyncRequested{ExportURL: "https://s/fhir", SaveMode: "merge", Types: []string{"Patient"}, Since: "auto",
		Until: "2025-01-01T00:00:00Z", Concurrency: "queue", Timeout: "1h", CorrelationID: "c", RequestedBy: "me",
		TypeFilters: []string{"Patient?active=true"}}
	got := messages.FailedFor("req-1", "default", req)
	want := messages.SyncFailed{RequestID: "req-1", Target: "default", ExportURL: "https://s/fhir", SaveMode: "merge",
		Types: []string{"Patient"}, Since: "auto", Until: "2025-01-01T00:00:00Z", CorrelationID: "c", RequestedBy: "me"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
}

func TestFormatInstant(t *testing.T) {
	at := time.Date(2025, 1, 1, 10, 0, 0, 500_000_000, time.FixedZone("", 10*3600))
	if got := messages.FormatInstant(at); got != "2025-01-01T00:00:00.5Z" {
		t.Errorf("FormatInstant = %q", got)
	}
	if back, ok := messages.ParseInstant(messages.FormatInstant(at)); !ok || !back.Equal(at) {
		t.Errorf("FormatInstant does not round-trip through ParseInstant: %v %v", back, ok)
	}
}
