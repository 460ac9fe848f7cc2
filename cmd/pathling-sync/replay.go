package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

type replayOptions struct {
	target          string
	since, until    string
	fromSeq, toSeq  uint64
	onlyFailed      bool
	reasons         []string
	includeReplayed bool
	dryRun          bool
	jsonOut         bool
}

func newReplayCmd(g *globals) *cobra.Command {
	o := &replayOptions{}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-publish past SyncRequested events from the stream (by time or sequence range, target, only failed)",
		Long: `replay reads past SyncRequested events from the stream, in stream order, and
publishes each again: the same body with concurrency forced to "queue" (so the
replays run one after another instead of failing with conflict), a new id
"replay:<original id>:<8 hex>", and the CloudEvents extension attribute
ce-replayof naming the original. It publishes one at a time, waiting for each
acknowledgement, so the service sees them in their original order.

The range is a time range (--since/--until: an instant such as
2025-01-01T00:00:00Z or 2025-01-01, or a duration back from now: 90m, 24h, 7d)
or a stream sequence range (--from-seq/--to-seq, inclusive; see "events").
A start is required: replaying the whole stream takes --from-seq 1. The end
defaults to the stream's last event when the command starts.

--only-failed keeps the requests whose outcome in the stream is a SyncFailed
(any reason, conflict included; --reason narrows it down). It skips a request that was already replayed
(a later request names it in ce-replayof: the replay stands for it; if that
replay failed too, it is the one replayed now); --include-replayed replays such
requests again. --dry-run lists what would be published and publishes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runReplay(cmd.Context(), g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.target, "target", "", "only this target's requests (default: all)")
	f.StringVar(&o.since, "since", "", "first request time: an instant, or this long ago (24h, 7d)")
	f.StringVar(&o.until, "until", "", "last request time: an instant, or this long ago")
	f.Uint64Var(&o.fromSeq, "from-seq", 0, "first stream sequence")
	f.Uint64Var(&o.toSeq, "to-seq", 0, "last stream sequence, inclusive (default: the stream's last)")
	f.BoolVar(&o.onlyFailed, "only-failed", false, "only requests whose outcome was SyncFailed")
	f.StringSliceVar(&o.reasons, "reason", nil, "with --only-failed: only failures with these reasons (e.g. conflict,timeout)")
	f.BoolVar(&o.includeReplayed, "include-replayed", false, "with --only-failed: also requests already replayed")
	f.BoolVar(&o.dryRun, "dry-run", false, "list what would be published; publish nothing")
	f.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	return cmd
}

// replayItem is one request replay found, and what became of it.
type replayItem struct {
	Seq          uint64          `json:"seq"`
	Time         time.Time       `json:"time"`
	Target       string          `json:"target"`
	OriginalID   string          `json:"originalId"`
	ID           string          `json:"id"`
	Body         json.RawMessage `json:"body"`
	PublishedSeq uint64          `json:"publishedSeq,omitempty"`
}

// replaySkip is a request in range that replay leaves alone, and why.
type replaySkip struct {
	Seq        uint64 `json:"seq"`
	OriginalID string `json:"originalId"`
	Reason     string `json:"reason"`
}

// replayReport is the JSON output of replay.
type replayReport struct {
	DryRun    bool         `json:"dryRun"`
	Replays   []replayItem `json:"replays"`
	Skipped   []replaySkip `json:"skipped"`
	NotFailed int          `json:"notFailed,omitempty"`
}

func (o *replayOptions) check(now time.Time) (streamhistory.Range, error) {
	var r streamhistory.Range
	timeRange := o.since != "" || o.until != ""
	seqRange := o.fromSeq != 0 || o.toSeq != 0
	if timeRange && seqRange {
		return r, errors.New("give a time range (--since/--until) or a sequence range (--from-seq/--to-seq), not both")
	}
	if o.since == "" && o.fromSeq == 0 {
		return r, errors.New("give where to start: --since (e.g. 24h) or --from-seq (--from-seq 1 for the whole stream)")
	}
	if o.target != "" && !messages.ValidTarget(o.target) {
		return r, fmt.Errorf("--target %q: must match [A-Za-z0-9_-]{1,64}", o.target)
	}
	if (o.includeReplayed || len(o.reasons) > 0) && !o.onlyFailed {
		return r, errors.New("--include-replayed and --reason go with --only-failed")
	}
	for _, reason := range o.reasons {
		if !messages.Reason(reason).Valid() {
			return r, fmt.Errorf("--reason %q: not a SyncFailed reason (%v)", reason, messages.Reasons())
		}
	}
	var err error
	if r.Since, err = parseWhen(o.since, now); err != nil {
		return r, fmt.Errorf("--since: %w", err)
	}
	if r.Until, err = parseWhen(o.until, now); err != nil {
		return r, fmt.Errorf("--until: %w", err)
	}
	if !r.Until.IsZero() && r.Until.Before(r.Since) {
		return r, errors.New("--until is before --since")
	}
	if o.toSeq != 0 && o.toSeq < o.fromSeq {
		return r, errors.New("--to-seq is below --from-seq")
	}
	r.FromSeq, r.ToSeq = o.fromSeq, o.toSeq
	return r, nil
}

func runReplay(ctx context.Context, g *globals, o *replayOptions) error {
	r, err := o.check(g.clock.Now())
	if err != nil {
		return usageError{err}
	}
	cfg, err := g.clientConfig()
	if err != nil {
		return err
	}
	h, js, closeConn, err := openHistory(cfg, "pathling-sync replay", g)
	if err != nil {
		return err
	}
	defer closeConn()
	q := streamhistory.ReplayQuery{Target: o.target, Range: r, OnlyFailed: o.onlyFailed, IncludeReplayed: o.includeReplayed}
	for _, reason := range o.reasons {
		q.Reasons = append(q.Reasons, messages.Reason(reason))
	}
	sel, err := h.SelectReplays(ctx, q)
	if err != nil {
		return historyErr(err)
	}

	rep := replayReport{DryRun: o.dryRun, Replays: []replayItem{}, Skipped: []replaySkip{}, NotFailed: sel.NotFailed}
	for _, s := range sel.Skipped {
		var why string
		switch {
		case s.FailedWith != "":
			why = "failed with " + string(s.FailedWith)
		case s.ReplayedAs != "":
			why = "already replayed as " + s.ReplayedAs
		default:
			why = "invalid body: " + clip(s.Invalid.Error(), 120)
		}
		rep.Skipped = append(rep.Skipped, replaySkip{Seq: s.Event.Seq, OriginalID: s.OriginalID, Reason: why})
	}
	for _, it := range sel.Replays {
		// Queued, so that the replays run one after another instead of failing with conflict.
		req := it.Request
		req.Concurrency = messages.ConcurrencyQueue
		body, err := json.Marshal(req)
		if err != nil {
			return err
		}
		rep.Replays = append(rep.Replays, replayItem{
			Seq: it.Event.Seq, Time: it.Event.Time(), Target: it.Target, OriginalID: it.OriginalID,
			ID: replayID(it.OriginalID), Body: body,
		})
	}

	if !o.jsonOut {
		printReplayPlan(g, o, rep)
	}
	var pubErr error
	if !o.dryRun {
		for i := range rep.Replays {
			it := &rep.Replays[i]
			ack, err := publishReplay(ctx, js, h.Subjects(), g.clock, it)
			if err != nil {
				pubErr = fmt.Errorf("%w: replay of %s (seq %d): %v (%d of %d published)", errInfra, it.OriginalID, it.Seq, err, i, len(rep.Replays))
				rep.Replays = rep.Replays[:i]
				break
			}
			it.PublishedSeq = ack.Sequence
			if !o.jsonOut {
				fmt.Fprintf(g.stdout, "replayed #%d %s as %s (seq %d)\n", it.Seq, it.OriginalID, it.ID, ack.Sequence)
			}
		}
	}
	if o.jsonOut {
		if err := writeJSON(g.stdout, rep); err != nil {
			return err
		}
	}
	return pubErr
}

// replayID is the id of a replay of original: "replay:<original>:<8 hex>".
func replayID(original string) string {
	return "replay:" + original + ":" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8]
}

func publishReplay(ctx context.Context, js jetstream.JetStream, subjects messages.Subjects, clk clock.Clock, it *replayItem) (*jetstream.PubAck, error) {
	env := messages.NewRequestEnvelope(it.ID, cliSource, it.Target, clk.Now(), messages.WithReplayOf(it.OriginalID))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return natsbus.PublishRequest(ctx, js, subjects.Requested(it.Target), env, it.Body)
}

func printReplayPlan(g *globals, o *replayOptions, rep replayReport) {
	w := g.stdout
	verb, tail := "replaying", ""
	if o.dryRun {
		verb, tail = "would replay", "; dry run, nothing published"
	}
	notes := []string{}
	if rep.NotFailed > 0 {
		notes = append(notes, fmt.Sprintf("%d did not fail", rep.NotFailed))
	}
	if len(rep.Skipped) > 0 {
		notes = append(notes, fmt.Sprintf("%d skipped", len(rep.Skipped)))
	}
	note := ""
	if len(notes) > 0 {
		note = " (" + strings.Join(notes, ", ") + ")"
	}
	if len(rep.Replays) == 0 {
		fmt.Fprintf(w, "nothing to replay%s\n", note)
	} else {
		fmt.Fprintf(w, "%s %s%s%s:\n", verb, plural(len(rep.Replays), "request"), note, tail)
	}
	for _, it := range rep.Replays {
		fmt.Fprintf(w, "  #%-5d %s  %s  %s -> %s  %s\n", it.Seq, it.Time.Format(timeFormat), it.Target,
			it.OriginalID, it.ID, summarize(messages.KindRequested, it.Body, ""))
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "  skipped #%d %s: %s\n", s.Seq, s.OriginalID, s.Reason)
	}
}
