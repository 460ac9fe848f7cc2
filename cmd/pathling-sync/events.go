package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/messages"
)

// This file has the events command and what the operator commands share to
// show the stream (read through clients/streamhistory): an event's one-line
// and JSON forms, time flags, and how reading errors map to exit codes.

type eventsOptions struct {
	target  string
	since   string
	until   string
	types   []string
	follow  bool
	jsonOut bool
}

func newEventsCmd(g *globals) *cobra.Command {
	o := &eventsOptions{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List or follow SyncRequested / SyncCompleted / SyncFailed events, one line each",
		Long: `events lists the events kept in the stream, oldest first, one line each:
stream sequence, time, type, target, request id and a summary (saveMode and since
of a request; files, duration and watermark of a completion; reason and message
of a failure). Without --follow it stops at the newest event; with --follow it
goes on printing new events until interrupted (Ctrl-C).

--since takes an instant (2025-01-01T00:00:00Z, 2025-01-01) or a duration back
from now (90m, 24h, 7d). Without --since, events lists the whole stream and
--follow shows only new events. --json prints one JSON object per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEvents(cmd.Context(), g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.target, "target", "", "only this target's events (default: all)")
	f.StringVar(&o.since, "since", "", "from this instant, or this long ago (24h, 7d)")
	f.StringVar(&o.until, "until", "", "up to this instant, or this long ago (not with --follow)")
	f.StringSliceVar(&o.types, "type", nil, "only these types: requested, completed, failed (comma-separated)")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events until interrupted")
	f.BoolVar(&o.jsonOut, "json", false, "one JSON object per line")
	return cmd
}

func runEvents(ctx context.Context, g *globals, o *eventsOptions) error {
	now := g.clock.Now()
	// Check the flags before connecting; the filters proper need the configured prefix.
	if _, err := eventFilters(o.target, o.types, messages.Subjects{}); err != nil {
		return usageError{err}
	}
	var r streamhistory.Range
	var err error
	if r.Since, err = parseWhen(o.since, now); err != nil {
		return usageError{fmt.Errorf("--since: %w", err)}
	}
	if r.Until, err = parseWhen(o.until, now); err != nil {
		return usageError{fmt.Errorf("--until: %w", err)}
	}
	if o.follow && !r.Until.IsZero() {
		return usageError{errors.New("--until cannot be combined with --follow")}
	}
	cfg, err := g.clientConfig()
	if err != nil {
		return err
	}
	subjects := messages.Subjects{Prefix: cfg.NATS.Stream.SubjectPrefix}
	filters, _ := eventFilters(o.target, o.types, subjects)
	h, _, closeConn, err := openHistory(cfg, "pathling-sync events", g)
	if err != nil {
		return err
	}
	defer closeConn()
	emit := func(ev streamhistory.Event) error {
		if o.jsonOut {
			b, err := json.Marshal(eventViewOf(ev, subjects))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, string(b))
			return err
		}
		_, err := fmt.Fprintln(g.stdout, eventLine(ev, subjects))
		return err
	}
	if !o.follow {
		return historyErr(h.Scan(ctx, filters, r, emit))
	}
	return historyErr(h.Follow(ctx, filters, r.Since, emit))
}

// eventFilters are the subject filters for a target ("" for all) and types
// (none for all).
func eventFilters(target string, types []string, s messages.Subjects) ([]string, error) {
	tok := "*"
	if target != "" {
		if !messages.ValidTarget(target) {
			return nil, fmt.Errorf("--target %q: must match [A-Za-z0-9_-]{1,64}", target)
		}
		tok = target
	}
	if len(types) == 0 {
		types = []string{messages.KindRequested, messages.KindCompleted, messages.KindFailed}
	}
	var filters []string
	seen := map[string]bool{}
	for _, t := range types {
		var f string
		switch t = strings.TrimSpace(strings.ToLower(t)); t {
		case messages.KindRequested:
			f = s.Requested(tok)
		case messages.KindCompleted:
			f = s.Completed(tok)
		case messages.KindFailed:
			f = s.Failed(tok)
		default:
			return nil, fmt.Errorf("--type %q: must be requested, completed or failed", t)
		}
		if !seen[f] {
			seen[f] = true
			filters = append(filters, f)
		}
	}
	return filters, nil
}

// openHistory connects a client command to NATS and returns the stream's
// history, and JetStream for publishing; closeConn closes the connection.
func openHistory(cfg *config.Client, name string, g *globals) (h *streamhistory.History, js jetstream.JetStream, closeConn func(), err error) {
	nc, js, err := openJetStream(cfg, name, g)
	if err != nil {
		return nil, nil, nil, err
	}
	h = streamhistory.New(js, cfg.NATS.Stream.Name,
		streamhistory.WithSubjects(messages.Subjects{Prefix: cfg.NATS.Stream.SubjectPrefix}))
	return h, js, nc.Close, nil
}

// historyErr maps what reading the stream failed on to the exit codes: a
// missing stream is configuration (2), NATS failing is infrastructure (3);
// other errors (writing the output, an interrupt) pass as they are.
func historyErr(err error) error {
	var ue *streamhistory.UnavailableError
	switch {
	case errors.Is(err, streamhistory.ErrNoStream):
		return usageError{fmt.Errorf("%w (has the service run here? is nats.stream.name right?)", err)}
	case errors.As(err, &ue):
		return fmt.Errorf("%w: %v", errInfra, err)
	}
	return err
}

// eventView is the JSON form of an event (events --json).
type eventView struct {
	Seq       uint64          `json:"seq"`
	Time      time.Time       `json:"time"`
	Stored    time.Time       `json:"stored"`
	Subject   string          `json:"subject"`
	Kind      string          `json:"kind,omitempty"`
	Target    string          `json:"target,omitempty"`
	ID        string          `json:"id"`
	RequestID string          `json:"requestId,omitempty"`
	Type      string          `json:"type,omitempty"`
	Source    string          `json:"source,omitempty"`
	ReplayOf  string          `json:"replayOf,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
	RawBody   string          `json:"rawBody,omitempty"` // a body that is not JSON
}

func eventViewOf(ev streamhistory.Event, s messages.Subjects) eventView {
	env := ev.Envelope()
	kind, target, _ := s.TargetOf(ev.Subject)
	v := eventView{
		Seq: ev.Seq, Time: ev.Time(), Stored: ev.Stored.UTC(), Subject: ev.Subject, Kind: kind, Target: target,
		Type: env.Type, Source: env.Source, ReplayOf: env.ReplayOf,
	}
	v.ID, v.RequestID = ev.IDs(kind)
	if json.Valid(ev.Data) {
		v.Body = redactBody(ev.Data)
	} else {
		v.RawBody = string(ev.Data)
	}
	return v
}

// line is the one-line form of an event:
//
//	#12  2026-11-27T08:00:34.852Z  requested  default  <request id>  saveMode=merge since=auto
func eventLine(ev streamhistory.Event, s messages.Subjects) string {
	v := eventViewOf(ev, s)
	kind := v.Kind
	if kind == "" {
		kind = "?"
	}
	target := v.Target
	if target == "" {
		target = "-"
	}
	rid := v.RequestID
	if rid == "" {
		rid = v.ID
	}
	return fmt.Sprintf("#%-5d %s  %-9s  %s  %s  %s", ev.Seq, v.Time.Format(timeFormat), kind, target, rid, summarize(kind, ev.Data, v.ReplayOf))
}

// timeFormat is how the operator commands print instants: UTC, milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// summarize is the human part of an event's line.
func summarize(kind string, data []byte, replayOf string) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	switch kind {
	case messages.KindRequested:
		var r messages.SyncRequested
		if err := json.Unmarshal(data, &r); err != nil {
			return "invalid body: " + clip(err.Error(), 80)
		}
		add("saveMode", r.SaveMode)
		add("since", r.Since)
		add("until", r.Until)
		add("types", strings.Join(r.Types, ","))
		add("concurrency", r.Concurrency)
		add("timeout", r.Timeout)
		add("exportUrl", messages.RedactURL(r.ExportURL))
		add("requestedBy", r.RequestedBy)
		add("correlationId", r.CorrelationID)
		if len(parts) == 0 {
			parts = append(parts, "(target defaults)")
		}
	case messages.KindCompleted:
		var c messages.SyncCompleted
		if err := json.Unmarshal(data, &c); err != nil {
			return "invalid body: " + clip(err.Error(), 80)
		}
		what := plural(c.Outputs, "file")
		if c.Empty {
			what = "no changes"
		}
		wm := "watermark " + c.Watermark
		if c.Watermark == "" {
			wm = "no watermark stored"
		}
		parts = append(parts, fmt.Sprintf("%s in %s, %s, %s", what, time.Duration(c.DurationMs)*time.Millisecond, plural(c.Polls, "poll"), wm))
	case messages.KindFailed:
		var f messages.SyncFailed
		if err := json.Unmarshal(data, &f); err != nil {
			return "invalid body: " + clip(err.Error(), 80)
		}
		retry := "final"
		if f.Retryable {
			retry = "retryable"
		}
		parts = append(parts, fmt.Sprintf("%s (%s): %s", f.Reason, retry, clip(oneLine(f.Message), 160)))
		add("running", f.RunningRequestID)
	default:
		return clip(oneLine(string(data)), 120)
	}
	add("replayOf", replayOf)
	return strings.Join(parts, " ")
}

var spaces = regexp.MustCompile(`\s+`)

func oneLine(s string) string { return spaces.ReplaceAllString(strings.TrimSpace(s), " ") }

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// parseWhen reads a time flag: "" (none), an RFC 3339 instant, a date or
// date-time without zone (UTC), or a duration back from now ("90m", "24h",
// "7d").
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an instant (2025-01-01T00:00:00Z, 2025-01-01) nor a duration back from now (90m, 24h, 7d)", s)
}

// writeJSON writes v indented, for --json outputs.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
