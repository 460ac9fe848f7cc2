package messages

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// SyncCompleted.MarshalJSON writes exactly what encoding/json does, for any field values.
func FuzzSyncCompletedMarshalMatchesEncodingJSON(f *testing.F) {
	f.Add("req-1", "run-1", "t1", "https://h/fhir?a=<b>&c", "merge", "Patient,Observation", "2025-01-01T00:00:00Z", "",
		"w", "http://p/$job?id=1", "2026-03-01T10:20:30.123", 1, false, int64(1767225600), int64(123456789), int64(3600),
		int64(1500), 2, 1, "c\u2028\u2029", "r\x00\x1f\x7f\"\\\t\n\r\b\f")
	f.Add("", "", "", "", "", "-", "", "", "", "", "", 0, true, int64(-62135596800), int64(0), int64(0), int64(-1), -1, 0,
		"\xff\xfe\xed\xa0\x80", "é€𝄞\U0010ffff")
	f.Add("a", "b", "c", "d", "e", "", "s", "u", "", "j", "", -5, false, int64(253402300800), int64(1), int64(-50400),
		int64(0), 0, 0, "", "")
	f.Add("a", "b", "c", "d", "e", "x", "s", "u", "", "j", "", 0, false, int64(-62167219201), int64(999999999), int64(0),
		int64(0), 0, 0, "", "") // a year before 0: encoding/json's error
	f.Fuzz(func(t *testing.T, requestID, runID, target, exportURL, saveMode, types, since, until, watermark, job, tt string,
		outputs int, empty bool, sec, nsec, offset, durationMs int64, polls, attempts int, correlationID, requestedBy string) {
		var typeList []string
		switch types {
		case "":
		case "-":
			typeList = []string{} // empty, not nil: omitted too
		default:
			typeList = strings.Split(types, ",")
		}
		zone := time.FixedZone("Z"+fmt.Sprint(offset%86400), int(offset%86400))
		c := SyncCompleted{
			RequestID: requestID, RunID: runID, Target: target, ExportURL: exportURL, SaveMode: saveMode, Types: typeList,
			Since: since, Until: until, Watermark: watermark, PathlingJob: job, PathlingTransactionTime: tt,
			Outputs: outputs, Empty: empty, StartedAt: time.Unix(sec, nsec).In(zone),
			FinishedAt: time.Unix(sec/2, -nsec).In(time.UTC), DurationMs: durationMs, Polls: polls, Attempts: attempts,
			CorrelationID: correlationID, RequestedBy: requestedBy,
		}
		got, gotErr := c.MarshalJSON()
		want, wantErr := c.marshalReflect()
		if !bytes.Equal(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("MarshalJSON:\n got %s %v\nwant %s %v", got, gotErr, want, wantErr)
		}
	})
}
