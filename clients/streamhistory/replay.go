package streamhistory

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// ReplayQuery says which past SyncRequested events a replay takes.
type ReplayQuery struct {
	Target string // "" for all
	Range  Range
	// OnlyFailed keeps the requests whose outcome in the stream is a
	// SyncFailed, with one of Reasons when any are given; unless
	// IncludeReplayed, it skips those a later request already replays
	// (names in ce-replayof): that replay stands for them.
	OnlyFailed      bool
	Reasons         []messages.Reason
	IncludeReplayed bool
}

// Replay is a request to publish again.
type Replay struct {
	Event      Event
	Target     string
	OriginalID string
	Request    messages.SyncRequested // decoded and valid
}

// Skip is a request in range that a replay leaves alone; exactly one of
// its reasons is set.
type Skip struct {
	Event      Event
	OriginalID string
	FailedWith messages.Reason // it failed, but with a reason not asked for
	ReplayedAs string          // a later request replays it already
	Invalid    error           // its body does not decode: it failed as invalid_request and would again
}

// ReplaySelection is what a replay takes and leaves, in stream order.
type ReplaySelection struct {
	Replays []Replay
	Skipped []Skip
	// NotFailed counts the requests OnlyFailed left out: no SyncFailed of
	// theirs is in the stream.
	NotFailed int
}

// SelectReplays reads the requests q names and decides, for each, whether
// a replay takes it. Errors are Scan's.
func (h *History) SelectReplays(ctx context.Context, q ReplayQuery) (ReplaySelection, error) {
	tok := "*"
	if q.Target != "" {
		tok = q.Target
	}
	r := q.Range

	// The requests in range; with OnlyFailed, also every later request that
	// replays one (the scan runs on to the stream's end for those).
	var found []Event
	replayed := map[string]string{} // original id -> id of its latest replay
	scan := r
	if q.OnlyFailed {
		scan.ToSeq, scan.Until = 0, time.Time{}
	}
	inRange := func(ev Event) bool {
		return (r.ToSeq == 0 || ev.Seq <= r.ToSeq) && (r.Until.IsZero() || !ev.Stored.After(r.Until))
	}
	err := h.Scan(ctx, []string{h.subjects.Requested(tok)}, scan, func(ev Event) error {
		if of := ev.Envelope().ReplayOf; of != "" {
			id, _ := ev.IDs(messages.KindRequested)
			replayed[of] = id
		}
		if inRange(ev) {
			found = append(found, ev)
		}
		return nil
	})
	if err != nil {
		return ReplaySelection{}, err
	}

	var failed map[string]messages.Reason // request id -> why it failed
	if q.OnlyFailed && len(found) > 0 {
		// Outcomes come after their requests: scan the failures from the first request on.
		failed = map[string]messages.Reason{}
		err = h.Scan(ctx, []string{h.subjects.Failed(tok)}, Range{FromSeq: found[0].Seq}, func(ev Event) error {
			_, rid := ev.IDs(messages.KindFailed)
			var f messages.SyncFailed
			_ = json.Unmarshal(ev.Data, &f)
			failed[rid] = f.Reason
			return nil
		})
		if err != nil {
			return ReplaySelection{}, err
		}
	}

	var sel ReplaySelection
	for _, ev := range found {
		origID, _ := ev.IDs(messages.KindRequested)
		if q.OnlyFailed {
			reason, ok := failed[origID]
			if !ok {
				sel.NotFailed++
				continue
			}
			if len(q.Reasons) > 0 && !slices.Contains(q.Reasons, reason) {
				sel.Skipped = append(sel.Skipped, Skip{Event: ev, OriginalID: origID, FailedWith: reason})
				continue
			}
			if by, ok := replayed[origID]; ok && !q.IncludeReplayed {
				sel.Skipped = append(sel.Skipped, Skip{Event: ev, OriginalID: origID, ReplayedAs: by})
				continue
			}
		}
		_, target, _ := h.subjects.TargetOf(ev.Subject)
		req, err := messages.DecodeRequested(ev.Data)
		if err != nil {
			sel.Skipped = append(sel.Skipped, Skip{Event: ev, OriginalID: origID, Invalid: err})
			continue
		}
		sel.Replays = append(sel.Replays, Replay{Event: ev, Target: target, OriginalID: origID, Request: req})
	}
	return sel, nil
}
