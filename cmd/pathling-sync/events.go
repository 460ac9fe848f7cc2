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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/messages"
)

// This file has the events command and what the operator commands share to
// read the stream: a bounded scan (scanStream), one event as read
// (streamEvent), its one-line form, and time flags.

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
	now := time.Now()
	// Check the flags before connecting; the filters proper need the configured prefix.
	if _, err := eventFilters(o.target, o.types, messages.Subjects{}); err != nil {
		return usageError{err}
	}
	var r streamRange
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
	nc, js, err := openJetStream(cfg, "pathling-sync events", g)
	if err != nil {
		return err
	}
	defer nc.Close()
	emit := func(ev streamEvent) error {
		if o.jsonOut {
			b, err := json.Marshal(ev.view(subjects))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, string(b))
			return err
		}
		_, err := fmt.Fprintln(g.stdout, ev.line(subjects))
		return err
	}
	if !o.follow {
		return scanStream(ctx, js, cfg.NATS.Stream.Name, filters, r, emit)
	}
	return followStream(ctx, js, cfg.NATS.Stream.Name, filters, r.Since, emit)
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

// serverFilter is how a consumer on the connected server selects filters:
// exactly from nats-server 2.10; before, with one wider filter, so the
// consumer's user must drop what Matches refuses (natsbus.Filter).
func serverFilter(js jetstream.JetStream, filters []string) (natsbus.Filter, error) {
	f, err := natsbus.Features(js.Conn())
	if err != nil {
		return natsbus.Filter{}, err
	}
	return f.Filter(filters...), nil
}

// streamEvent is one message as read from the stream.
type streamEvent struct {
	Stream  string
	Seq     uint64
	Stored  time.Time // when the stream stored it
	Subject string
	Header  nats.Header
	Data    []byte
}

func eventOf(m jetstream.Msg) (streamEvent, error) {
	md, err := m.Metadata()
	if err != nil {
		return streamEvent{}, fmt.Errorf("stream message metadata: %w", err)
	}
	return streamEvent{Stream: md.Stream, Seq: md.Sequence.Stream, Stored: md.Timestamp, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}, nil
}

// streamRange bounds a scan of the stream. Zero fields do not bound.
type streamRange struct {
	FromSeq uint64    // first sequence
	ToSeq   uint64    // last sequence, inclusive
	Since   time.Time // first stored at or after (ignored when FromSeq is set)
	Until   time.Time // last stored at or before
}

// openStream looks the stream up. A missing stream is a configuration
// problem (wrong name, or the service never ran against this NATS).
func openStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, usageError{fmt.Errorf("stream %s does not exist on this NATS (has the service run here? is nats.stream.name right?)", name)}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: stream %s: %v", errInfra, name, err)
	}
	return s, nil
}

// scanBatch is how many messages one fetch of a scan asks for.
const scanBatch = 256

// scanStream calls fn with each message of stream matching filters within
// r, in stream order. It ends at r's end, and never after the stream's last
// message when the scan began: it never waits for new messages. fn's error
// stops the scan and is returned.
func scanStream(ctx context.Context, js jetstream.JetStream, stream string, filters []string, r streamRange, fn func(streamEvent) error) error {
	s, err := openStream(ctx, js, stream)
	if err != nil {
		return err
	}
	last := s.CachedInfo().State.LastSeq
	end := r.ToSeq
	if end == 0 || end > last {
		end = last
	}
	if end == 0 || r.FromSeq > end {
		return nil
	}
	flt, err := serverFilter(js, filters)
	if err != nil {
		return fmt.Errorf("%w: read stream %s: %v", errInfra, stream, err)
	}
	cc := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, // gone soon even if this process dies mid-scan
		MemoryStorage:     true,
		Replicas:          1,
	}
	switch {
	case r.FromSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.FromSeq
	case !r.Since.IsZero():
		since := r.Since
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	flt.Apply(&cc)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := s.CreateConsumer(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: read stream %s: %v", errInfra, stream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(pending, scanBatch)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("%w: read stream %s: %v", errInfra, stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			ev, err := eventOf(m)
			if err != nil {
				return err
			}
			if ev.Seq > end || (!r.Until.IsZero() && ev.Stored.After(r.Until)) {
				return nil
			}
			if flt.Matches(ev.Subject) {
				if err := fn(ev); err != nil {
					return err
				}
			}
			if ev.Seq == end {
				return nil
			}
			md, _ := m.Metadata()
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("%w: read stream %s: %v", errInfra, stream, err)
		}
		if got == 0 {
			return fmt.Errorf("%w: read stream %s: no messages delivered although %d are pending", errInfra, stream, pending)
		}
	}
	return nil
}

// followStream calls fn with each message matching filters, from since
// (zero: only new messages) on, until ctx ends; then it returns nil.
func followStream(ctx context.Context, js jetstream.JetStream, stream string, filters []string, since time.Time, fn func(streamEvent) error) error {
	s, err := openStream(ctx, js, stream)
	if err != nil {
		return err
	}
	flt, err := serverFilter(js, filters)
	if err != nil {
		return fmt.Errorf("%w: follow stream %s: %v", errInfra, stream, err)
	}
	oc := jetstream.OrderedConsumerConfig{FilterSubjects: flt.Subjects, DeliverPolicy: jetstream.DeliverNewPolicy}
	if !since.IsZero() {
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.OrderedConsumer(ctx, oc)
	if err != nil {
		return fmt.Errorf("%w: follow stream %s: %v", errInfra, stream, err)
	}
	events := make(chan streamEvent, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if !flt.Matches(m.Subject()) {
			return
		}
		ev, err := eventOf(m)
		if err != nil {
			return
		}
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("%w: follow stream %s: %v", errInfra, stream, err)
	}
	defer cc.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
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

// time is the event's ce-time, else when the stream stored it.
func (ev streamEvent) time(env messages.Envelope) time.Time {
	if !env.Time.IsZero() {
		return env.Time.UTC()
	}
	return ev.Stored.UTC()
}

// ids returns the event's own id and the id of the request it is about.
func (ev streamEvent) ids(kind string) (id, requestID string) {
	id = messages.RequestID(ev.Header, ev.Stream, ev.Seq)
	switch kind {
	case messages.KindRequested:
		return id, id
	case messages.KindCompleted, messages.KindFailed:
		var b struct {
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(ev.Data, &b) == nil && b.RequestID != "" {
			return id, b.RequestID
		}
		r, _ := strings.CutSuffix(id, "/"+kind)
		return id, r
	}
	return id, ""
}

func (ev streamEvent) view(s messages.Subjects) eventView {
	env, _ := messages.ReadEnvelope(ev.Header)
	kind, target, _ := s.TargetOf(ev.Subject)
	v := eventView{
		Seq: ev.Seq, Time: ev.time(env), Stored: ev.Stored.UTC(), Subject: ev.Subject, Kind: kind, Target: target,
		Type: env.Type, Source: env.Source, ReplayOf: env.ReplayOf,
	}
	v.ID, v.RequestID = ev.ids(kind)
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
func (ev streamEvent) line(s messages.Subjects) string {
	v := ev.view(s)
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
