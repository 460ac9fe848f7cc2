package schedules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// maxLookback bounds the search for a schedule's previous tick: robfig/cron
// itself gives up looking for a next tick after five years.
const maxLookback = 6 * 366 * 24 * time.Hour

// Parse parses a cron expression the way every replica must read it: a
// standard 5-field expression or a descriptor (@hourly, @daily, @every 90s,
// ...), optionally prefixed by CRON_TZ=<IANA zone>. Without a CRON_TZ prefix
// the expression is evaluated in UTC, not in the process' local zone, so that
// replicas in differently configured containers compute the same ticks.
func Parse(expr string) (cron.Schedule, error) {
	expr = strings.TrimSpace(expr)
	hasTZ := strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=")
	if hasTZ && !strings.Contains(expr, " ") {
		// robfig/cron would slice out of range on this input.
		return nil, errors.New("a CRON_TZ= prefix must be followed by a space and an expression")
	}
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, err
	}
	if spec, ok := s.(*cron.SpecSchedule); ok && !hasTZ {
		spec.Location = time.UTC
	}
	return s, nil
}

// NextTick returns the schedule's first tick strictly after t (the zero time
// when there is none within five years). An "@every <d>" schedule ticks on a
// fixed grid (multiples of d since Go's zero time) rather than d after t, so
// that replicas started at different moments agree on the ticks.
func NextTick(s cron.Schedule, t time.Time) time.Time {
	if d, ok := constantDelay(s); ok {
		return t.Truncate(d).Add(d)
	}
	return s.Next(t)
}

// PrevTick returns the schedule's latest tick at or before t; false when
// there is none within about six years.
func PrevTick(s cron.Schedule, t time.Time) (time.Time, bool) {
	if d, ok := constantDelay(s); ok {
		return t.Truncate(d), true
	}
	// Widen a window back from t until it holds a tick, then walk forward
	// to the last tick in it. The window at most doubles past the gap
	// between two ticks, so the walk takes only a few steps.
	for w := time.Second; w <= maxLookback; w *= 2 {
		tick := s.Next(t.Add(-w))
		if tick.IsZero() || tick.After(t) {
			continue
		}
		for {
			n := s.Next(tick)
			if n.IsZero() || n.After(t) {
				return tick, true
			}
			tick = n
		}
	}
	return time.Time{}, false
}

// latestDue returns the latest tick at or before now, starting from due
// (a tick at or before now), and how many ticks it skipped.
func latestDue(s cron.Schedule, due, now time.Time) (time.Time, int) {
	skipped := 0
	for range 10000 {
		n := NextTick(s, due)
		if n.IsZero() || n.After(now) {
			return due, skipped
		}
		due = n
		skipped++
	}
	// Far behind (a frequent schedule after a long suspension): jump.
	if prev, ok := PrevTick(s, now); ok && prev.After(due) {
		return prev, skipped + 1
	}
	return due, skipped
}

func constantDelay(s cron.Schedule) (time.Duration, bool) {
	switch c := s.(type) {
	case cron.ConstantDelaySchedule:
		return c.Delay, c.Delay > 0
	case *cron.ConstantDelaySchedule:
		return c.Delay, c != nil && c.Delay > 0
	}
	return 0, false
}

// RequestID is the deterministic id of the SyncRequested a schedule
// publishes for a tick: "schedule:<target>:<schedule>:<tick, RFC 3339 in
// UTC>". Every replica computes the same id for the same tick, and
// JetStream's duplicate window keeps one of their copies.
func RequestID(target, schedule string, tick time.Time) string {
	return fmt.Sprintf("schedule:%s:%s:%s", target, schedule, tick.UTC().Format(time.RFC3339))
}
