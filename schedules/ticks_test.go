package schedules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pathling-sync/pathling-sync/schedules"
)

func TestParseDefaultsToUTC(t *testing.T) {
	s, err := schedules.Parse("0 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	if spec, ok := s.(*cron.SpecSchedule); !ok || spec.Location != time.UTC {
		t.Fatalf("schedule %#v is not evaluated in UTC", s)
	}
	from := time.Date(2025, 1, 1, 3, 0, 0, 0, time.UTC)
	if got := s.Next(from); !got.Equal(time.Date(2025, 1, 2, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("Next = %s, want 02:00 UTC", got)
	}
	s, err = schedules.Parse("CRON_TZ=Europe/Berlin 0 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Next(from); !got.Equal(time.Date(2025, 1, 2, 1, 0, 0, 0, time.UTC)) {
		t.Errorf("Berlin: Next = %s, want 01:00 UTC", got.UTC())
	}
	for _, bad := range []string{"", "CRON_TZ=UTC", "61 * * * *", "* * * * * *", "@fortnightly", "CRON_TZ=Nowhere/Else 0 2 * * *"} {
		if _, err := schedules.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// "@every" ticks on a grid: replicas started at different moments agree.
func TestEveryIsAligned(t *testing.T) {
	s, err := schedules.Parse("@every 10m")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, start := range []time.Duration{0, 3 * time.Second, 4*time.Minute + 59*time.Second, 9*time.Minute + 59*time.Second} {
		if got := schedules.NextTick(s, base.Add(start)); !got.Equal(base.Add(10 * time.Minute)) {
			t.Errorf("NextTick(10:00 + %s) = %s", start, got)
		}
	}
	if got, _ := schedules.PrevTick(s, base.Add(7*time.Minute)); !got.Equal(base) {
		t.Errorf("PrevTick = %s", got)
	}
}

func TestPrevTick(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct{ expr, now, want string }{
		{"0 2 * * *", "2026-03-04T14:00:00Z", "2026-03-04T02:00:00Z"},
		{"0 2 * * *", "2026-03-04T01:59:59Z", "2026-03-03T02:00:00Z"},
		{"0 2 * * *", "2026-03-04T02:00:00Z", "2026-03-04T02:00:00Z"},
		{"0 2 * * 1-5", "2026-03-02T01:00:00Z", "2026-02-27T02:00:00Z"}, // Monday: last Friday
		{"*/5 * * * *", "2026-03-01T10:07:10Z", "2026-03-01T10:05:00Z"},
		{"@yearly", "2026-03-01T10:07:10Z", "2026-01-01T00:00:00Z"},
		{"0 0 29 2 *", "2026-03-01T00:00:00Z", "2024-02-29T00:00:00Z"},
	} {
		s, err := schedules.Parse(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := schedules.PrevTick(s, at(tc.now))
		if !ok || !got.Equal(at(tc.want)) {
			t.Errorf("PrevTick(%q, %s) = %s %t, want %s", tc.expr, tc.now, got, ok, tc.want)
		}
		if next := schedules.NextTick(s, got); !next.After(at(tc.now)) {
			t.Errorf("%q: the tick after PrevTick, %s, is not after now", tc.expr, next)
		}
	}
}

func TestRequestID(t *testing.T) {
	tick := time.Date(2026, 3, 1, 3, 0, 0, 0, time.FixedZone("CET", 3600))
	if got := schedules.RequestID("analytics", "nightly", tick); got != "schedule:analytics:nightly:2026-03-01T02:00:00Z" {
		t.Errorf("RequestID = %q", got)
	}
	if strings.ContainsAny(schedules.RequestID("a", "b", tick), " \r\n") {
		t.Error("id not usable as a header")
	}
}
