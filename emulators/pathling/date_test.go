package pathling

import (
	"net/http"
	"testing"
	"time"
)

// Every response carries a Date header from the emulator's clock, shifted by
// ClockSkew, as Pathling's servlet container dates its responses.
func TestDateHeaderFollowsClockSkew(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := scriptedHarness(t, Config{Clock: func() time.Time { return at }, ClockSkew: -10 * time.Minute})
	loc := h.mustKickOff(t, kickOffHeaders(), body(urlParam("https://source.example.com/fhir"), codeParam("saveMode", "merge")))
	want := at.Add(-10 * time.Minute).Format(http.TimeFormat)
	for name, r := range map[string]response{
		"metadata": do(t, http.MethodGet, h.base()+"/metadata", nil, nil),
		"poll":     poll(t, loc, nil),
		"delete":   do(t, http.MethodDelete, loc, nil, nil),
		"404":      poll(t, loc, nil),
	} {
		if got := r.header.Get("Date"); got != want {
			t.Errorf("%s: Date %q, want %q", name, got, want)
		}
	}
}
