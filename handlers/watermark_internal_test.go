package handlers

import (
	"testing"
	"time"
)

func TestWatermarkMoves(t *testing.T) {
	stored := time.Date(2026, 1, 15, 1, 58, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := stored.Add(d); return &v }
	cases := []struct {
		name      string
		since     *time.Time
		hasStored bool
		want      bool
	}{
		{"full export, none stored", nil, false, true},
		{"full export over a stored watermark", nil, true, true},
		{"since auto: since is the stored watermark", at(0), true, true},
		{"explicit since before the stored watermark", at(-time.Hour), true, true},
		{"explicit since after the stored watermark: a gap", at(time.Millisecond), true, false},
		{"explicit since, none stored: everything before it is a gap", at(-time.Hour), false, false},
	}
	for _, c := range cases {
		if got := watermarkMoves(c.since, stored, c.hasStored); got != c.want {
			t.Errorf("%s: moves = %v, want %v", c.name, got, c.want)
		}
	}
}
