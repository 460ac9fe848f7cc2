package bench

import "testing"

// The round trips counter is read from the exposition whatever scope labels
// the exporter adds, and not confused with a metric it prefixes.
func TestParseRoundTrips(t *testing.T) {
	text := "# HELP pathling_sync_redis_round_trips_total Round trips.\n" +
		"# TYPE pathling_sync_redis_round_trips_total counter\n" +
		"pathling_sync_redis_round_trips_total_other 9\n" +
		`pathling_sync_redis_round_trips_total{otel_scope_name="x",otel_scope_version=""} 12345` + "\n"
	n, err := parseMetric(text, roundTripsMetric)
	if err != nil || n != 12345 {
		t.Fatalf("parseMetric = %d, %v; want 12345", n, err)
	}
	if n, err := parseMetric("pathling_sync_redis_round_trips_total 7\n", roundTripsMetric); err != nil || n != 7 {
		t.Fatalf("without labels: %d, %v", n, err)
	}
	if _, err := parseMetric("up 1\n", roundTripsMetric); err == nil {
		t.Fatal("no error without the metric")
	}
}
