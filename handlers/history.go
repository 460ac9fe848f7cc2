package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Durations keeps, per target and request shape, a bounded sample of how
// long past Pathling jobs took (kick-off to final answer), the history the
// poll planner (handlers/pollplan) learns from. It is shared by replicas and
// survives restarts; a lost or unreadable history only costs polling
// precision (the planner falls back to the seed cadence).
type Durations interface {
	// RecordDuration adds the duration of a job that completed: from its
	// kick-off to its end as the polls saw it (pollplan.Duration: halfway
	// between the last poll that saw it running and the one that saw it
	// done). Failed jobs end at arbitrary times and are not recorded.
	RecordDuration(ctx context.Context, target, shape string, d time.Duration) error
	// Durations returns the kept durations, newest first; none is not an error.
	Durations(ctx context.Context, target, shape string) ([]time.Duration, error)
}

// DurationNoter is implemented by a Durations cache that can learn a sample
// the store already holds, written with the run's end (Finish.Duration), so
// that a completed job costs no write of its own.
type DurationNoter interface {
	NoteDuration(target, shape string, d time.Duration)
}

// DurationShape names the kind of job a duration belongs to: full or
// incremental (since set) and the type set, the two things that change how
// long an import takes most. The key is short and stable: the sorted types,
// hashed when they would make it longer than 64 bytes.
func DurationShape(p ImportParams) string {
	full := p.Since == nil
	if len(p.Types) == 0 { // the common case: no concatenation
		if full {
			return "full:*"
		}
		return "incr:*"
	}
	kind := "full:"
	if !full {
		kind = "incr:"
	}
	if n := len(kind) + joinedLen(p.Types); n <= 64 {
		var b strings.Builder
		b.Grow(n)
		b.WriteString(kind)
		writeSorted(&b, p.Types, ',')
		return b.String()
	}
	types := strings.Join(sorted(p.Types), ",")
	sum := sha256.Sum256([]byte(types))
	return kind + "h" + hex.EncodeToString(sum[:12])
}
