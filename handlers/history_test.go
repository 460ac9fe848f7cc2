package handlers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// The shape is full or incremental plus the sorted type set; short and stable.
func TestDurationShape(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	many := strings.Fields("Patient Observation Condition Encounter Procedure MedicationRequest DiagnosticReport Immunization AllergyIntolerance CarePlan")
	for _, tc := range []struct {
		p    handlers.ImportParams
		want string
	}{
		{handlers.ImportParams{ExportURL: "http://a"}, "full:*"},
		{handlers.ImportParams{ExportURL: "http://b", Types: []string{"Patient", "Observation"}}, "full:Observation,Patient"},
		{handlers.ImportParams{Types: []string{"Observation", "Patient"}, Since: &since}, "incr:Observation,Patient"},
		{handlers.ImportParams{Types: many}, "full:h"},
	} {
		got := handlers.DurationShape(tc.p)
		if !strings.HasPrefix(got, tc.want) || (!strings.HasSuffix(tc.want, ":h") && got != tc.want) {
			t.Errorf("DurationShape(%v) = %q, want %q", tc.p.Types, got, tc.want)
		}
		if len(got) > 64 {
			t.Errorf("DurationShape(%v) = %q: longer than 64", tc.p.Types, got)
		}
	}
	// The hashed form is stable and order-free.
	rev := append([]string(nil), many...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if a, b := handlers.DurationShape(handlers.ImportParams{Types: many}), handlers.DurationShape(handlers.ImportParams{Types: rev}); a != b {
		t.Errorf("hashed shapes differ: %q %q", a, b)
	}
}
