package messages

import (
	"testing"
	"time"
)

// benchRequest is the SyncRequested the bench's throughput scenario sends
// (bench/run.go requestBody("queue")).
var benchRequest = []byte(`{"concurrency":"queue","saveMode":"merge","types":["Patient","Observation"]}`)

func BenchmarkDecodeRequested(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r, err := DecodeRequested(benchRequest)
		if err != nil || len(r.Types) != 2 {
			b.Fatal(r, err)
		}
	}
}

func BenchmarkSyncCompletedMarshal(b *testing.B) {
	start := time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.FixedZone("CET", 3600))
	c := SyncCompleted{
		RequestID:               "0193a1f2-7c1e-7b8a-9f3e-2b1c4d5e6f70",
		RunID:                   "0193a1f2-7c1e-7b8a-9f3e-2b1c4d5e6f71",
		Target:                  "t00001",
		ExportURL:               "http://127.0.0.1:40000/source/fhir",
		SaveMode:                "merge",
		Types:                   []string{"Patient", "Observation"},
		Watermark:               "2026-12-03T17:00:00Z",
		PathlingJob:             "http://127.0.0.1:40000/t/t00001/fhir/$job?id=12345",
		PathlingTransactionTime: "2026-12-03T18:00:00.000+00:00",
		Outputs:                 1,
		StartedAt:               start,
		FinishedAt:              start.Add(1500 * time.Millisecond),
		DurationMs:              1500,
		Polls:                   1,
		Attempts:                1,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
