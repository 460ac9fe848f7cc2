package handlers

import (
	"slices"
	"strings"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// WatermarkKey names the watermark a sync reads and writes: one per export
// URL and per set of parameters that narrow what an export returns (types,
// type filters, elements, associated data), so that a Patient-only sync, or
// an Observation sync of ids only, never moves the watermark of a sync of
// everything. until narrows the export too; it caps the committed value
// instead (see driver.complete). Elements and associated data are appended
// only when set, so the keys of syncs without them are those written before
// they were part of the key.
func WatermarkKey(p ImportParams) string {
	n := len(p.ExportURL) + len("|types=") + joinedLen(p.Types) + len("|filters=") + joinedLen(p.TypeFilters)
	if len(p.Elements) > 0 {
		n += len("|elements=") + joinedLen(p.Elements)
	}
	if len(p.IncludeAssociatedData) > 0 {
		n += len("|associated=") + joinedLen(p.IncludeAssociatedData)
	}
	// One allocation: the key, built in place (it is made for every request).
	var b strings.Builder
	b.Grow(n)
	b.WriteString(p.ExportURL)
	b.WriteString("|types=")
	writeSorted(&b, p.Types, ',')
	b.WriteString("|filters=")
	writeSorted(&b, p.TypeFilters, '&')
	if len(p.Elements) > 0 {
		b.WriteString("|elements=")
		writeSorted(&b, p.Elements, ',')
	}
	if len(p.IncludeAssociatedData) > 0 {
		b.WriteString("|associated=")
		writeSorted(&b, p.IncludeAssociatedData, ',')
	}
	return b.String()
}

// joinedLen is the length of values joined with a one-byte separator.
func joinedLen(values []string) int {
	if len(values) == 0 {
		return 0
	}
	n := len(values) - 1
	for _, v := range values {
		n += len(v)
	}
	return n
}

// writeSorted writes values sorted, joined with sep. Values usually come
// sorted (or one): they are copied for sorting only when they are not.
func writeSorted(b *strings.Builder, values []string, sep byte) {
	values = sorted(values)
	for i, v := range values {
		if i > 0 {
			b.WriteByte(sep)
		}
		b.WriteString(v)
	}
}

// sorted is values when they are sorted, else a sorted copy (values are
// the request's and stay as they are).
func sorted(values []string) []string {
	if slices.IsSorted(values) {
		return values
	}
	v := slices.Clone(values)
	slices.Sort(v)
	return v
}

// watermarkMoves reports whether a finished run may move its key's stored
// watermark: only when what it imported covers everything from the stored
// watermark (from the beginning when none is stored) up to the new value,
// since a later since "auto" sync starts from there and would skip any gap.
// A full export (no since) covers everything; a since "auto" run starts at
// the stored watermark; an explicit since covers the gap only when it is not
// after the stored watermark.
func watermarkMoves(since *time.Time, stored time.Time, hasStored bool) bool {
	if since == nil {
		return true
	}
	return hasStored && !since.After(stored)
}

// settleWatermark decides a finished run's watermark wm (rounded down to
// the store's milliseconds) against the stored one (stored, ok: none when
// false), read under the run's lease, so that only the run itself can change
// it before its finish: commit is whether the run moves it (watermarkMoves,
// and never backwards), after the stored watermark once the run finished.
func settleWatermark(since *time.Time, stored time.Time, ok bool, wm time.Time) (after time.Time, afterOK, commit bool) {
	if !watermarkMoves(since, stored, ok) {
		return stored, ok, false
	}
	wm = wm.Truncate(time.Millisecond).UTC()
	if ok && !stored.Before(wm) {
		return stored, true, false
	}
	return wm, true, true
}

// formatWatermark is SyncCompleted's watermark: the stored one after the
// run, empty when none is stored.
func formatWatermark(wm time.Time, stored bool) string {
	if !stored {
		return ""
	}
	return messages.FormatInstant(wm)
}
