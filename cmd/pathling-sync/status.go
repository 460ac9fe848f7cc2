package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	"github.com/pathling-sync/pathling-sync/messages"
)

type statusOptions struct {
	target  string
	jsonOut bool
}

func newStatusCmd(g *globals) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show targets, running syncs (state, polls, progress, age), locks, queues, watermarks and last outcomes",
		Long: `status reads Redis (locks, run records, queues, watermarks) and the stream (the
last SyncCompleted and SyncFailed of each target) and prints, per target: who
holds its lock, the syncs running (state, polls, Pathling's X-Progress, attempts,
age, the replica driving it, the Pathling job), the requests queued behind it,
its watermarks with their age, and its last outcome. Targets are the configured
ones plus any seen in Redis or in the stream. It only reads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStatus(cmd.Context(), g, o) },
	}
	cmd.Flags().StringVar(&o.target, "target", "", "only this target")
	cmd.Flags().BoolVar(&o.jsonOut, "json", false, "print JSON")
	return cmd
}

// statusReport is the JSON output of status.
type statusReport struct {
	Stream  string         `json:"stream"`
	LastSeq uint64         `json:"lastSeq"`
	At      time.Time      `json:"at"`
	Targets []targetStatus `json:"targets"`

	configured bool // the client has targets configured (else it cannot tell)
}

type targetStatus struct {
	Name        string          `json:"name"`
	Configured  bool            `json:"configured"`
	Pathling    string          `json:"pathling,omitempty"`
	Lock        *lockView       `json:"lock"` // null when free
	Running     []runView       `json:"running"`
	Queue       []queueView     `json:"queue"`
	Watermarks  []watermarkView `json:"watermarks"`
	LastOutcome *outcomeView    `json:"lastOutcome"` // null when none in the stream
}

type lockView struct {
	RequestID string `json:"requestId"`
	Token     int64  `json:"token"`
	TTLMs     int64  `json:"ttlMs"`
}

type runView struct {
	RequestID string `json:"requestId"`
	RunID     string `json:"runId"`
	State     string `json:"state"`
	Polls     int    `json:"polls"`
	Progress  string `json:"progress,omitempty"`
	// ExpectedEnd is when the running Pathling job is expected to end, by
	// its duration history or X-Progress, as of its last poll.
	ExpectedEnd time.Time `json:"expectedEnd,omitzero"`
	Attempts    int       `json:"attempts"`
	StartedAt   time.Time `json:"startedAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Deadline    time.Time `json:"deadline,omitzero"`
	AgeSeconds  int64     `json:"ageSeconds"`
	Driver      string    `json:"driver,omitempty"`
	StatusURL   string    `json:"statusUrl,omitempty"`
}

type queueView struct {
	RequestID string    `json:"requestId"`
	Seq       uint64    `json:"seq"`
	Deadline  time.Time `json:"deadline,omitzero"`
}

type watermarkView struct {
	Key        string    `json:"key"`
	Time       time.Time `json:"time"`
	AgeSeconds int64     `json:"ageSeconds"`
}

type outcomeView struct {
	Kind      string          `json:"kind"` // completed or failed
	Seq       uint64          `json:"seq"`
	Time      time.Time       `json:"time"`
	RequestID string          `json:"requestId"`
	Summary   string          `json:"summary"`
	Body      json.RawMessage `json:"body,omitempty"`
}

func runStatus(ctx context.Context, g *globals, o *statusOptions) error {
	if o.target != "" && !messages.ValidTarget(o.target) {
		return usageError{fmt.Errorf("--target %q: must match [A-Za-z0-9_-]{1,64}", o.target)}
	}
	cfg, err := g.clientConfig()
	if err != nil {
		return err
	}
	h, _, closeConn, err := openHistory(cfg, "pathling-sync status", g)
	if err != nil {
		return err
	}
	defer closeConn()
	lastSeq, err := h.LastSeq(ctx)
	if err != nil {
		return historyErr(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rdb, err := connectRedis(rctx, cfg.Redis)
	cancel()
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := redisstore.New(rdb, redisstore.WithPrefix(cfg.Redis.KeyPrefix))

	ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	now := g.clock.Now()
	names := []string{o.target}
	if o.target == "" {
		names, err = knownTargets(ctx, slices.Sorted(maps.Keys(cfg.Targets)), h, store)
		if err != nil {
			return err
		}
	}
	rep := statusReport{Stream: cfg.NATS.Stream.Name, LastSeq: lastSeq, At: now.UTC(),
		Targets: []targetStatus{}, configured: len(cfg.Targets) > 0}
	for _, name := range names {
		ts, err := targetState(ctx, name, now, store, h)
		if err != nil {
			return err
		}
		if url, ok := cfg.Targets[name]; ok {
			ts.Configured, ts.Pathling = true, messages.RedactURL(url)
		}
		rep.Targets = append(rep.Targets, ts)
	}
	if o.jsonOut {
		return writeJSON(g.stdout, rep)
	}
	printStatus(g.stdout, rep, now)
	return nil
}

// knownTargets are the configured targets plus those the stream has events
// of and those Redis has keys of, sorted.
func knownTargets(ctx context.Context, configured []string, h *streamhistory.History, store *redisstore.Store) ([]string, error) {
	set := map[string]bool{}
	for _, n := range configured {
		set[n] = true
	}
	inStream, err := h.Targets(ctx)
	if err != nil {
		return nil, historyErr(err)
	}
	for _, t := range inStream {
		set[t] = true
	}
	ts, err := store.Targets(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInfra, err)
	}
	for _, t := range ts {
		set[t] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func targetState(ctx context.Context, name string, now time.Time, store *redisstore.Store, h *streamhistory.History) (targetStatus, error) {
	ts := targetStatus{Name: name, Running: []runView{}, Queue: []queueView{}, Watermarks: []watermarkView{}}
	redisErr := func(err error) error { return fmt.Errorf("%w: Redis: %v", errInfra, err) }
	lock, held, err := store.Lock(ctx, name)
	if err != nil {
		return ts, redisErr(err)
	}
	if held {
		ts.Lock = &lockView{RequestID: lock.RequestID, Token: lock.Token, TTLMs: lock.TTL.Milliseconds()}
	}
	runs, err := store.ListRuns(ctx, name)
	if err != nil {
		return ts, redisErr(err)
	}
	for _, r := range runs {
		if r.State.Terminal() {
			continue
		}
		ts.Running = append(ts.Running, runView{
			RequestID: r.RequestID, RunID: r.RunID, State: string(r.State), Polls: r.Polls, Progress: r.Progress,
			ExpectedEnd: r.ExpectedEnd.UTC(), Attempts: r.Attempts, StartedAt: r.StartedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Deadline: r.Deadline.UTC(),
			AgeSeconds: int64(now.Sub(r.StartedAt).Seconds()), Driver: r.Driver, StatusURL: r.StatusURL,
		})
	}
	queue, err := store.Queue(ctx, name)
	if err != nil {
		return ts, redisErr(err)
	}
	for _, q := range queue {
		ts.Queue = append(ts.Queue, queueView{RequestID: q.RequestID, Seq: q.Seq, Deadline: q.Deadline})
	}
	wms, err := store.Watermarks(ctx, name)
	if err != nil {
		return ts, redisErr(err)
	}
	for key, t := range wms {
		ts.Watermarks = append(ts.Watermarks, watermarkView{Key: key, Time: t, AgeSeconds: int64(now.Sub(t).Seconds())})
	}
	slices.SortFunc(ts.Watermarks, func(a, b watermarkView) int { return strings.Compare(a.Key, b.Key) })
	ts.LastOutcome, err = lastOutcome(ctx, h, name)
	return ts, err
}

// lastOutcome is the view of the target's last outcome in the stream; nil
// when it has none.
func lastOutcome(ctx context.Context, h *streamhistory.History, target string) (*outcomeView, error) {
	ev, ok, err := h.LastOutcome(ctx, target)
	if err != nil || !ok {
		return nil, historyErr(err)
	}
	kind, _, _ := h.Subjects().TargetOf(ev.Subject)
	_, rid := ev.IDs(kind)
	v := &outcomeView{Kind: kind, Seq: ev.Seq, Time: ev.Time(), RequestID: rid, Summary: summarize(kind, ev.Data, ev.Envelope().ReplayOf)}
	if json.Valid(ev.Data) {
		v.Body = redactBody(ev.Data)
	}
	return v, nil
}

// printStatus writes the readable form of a status report.
func printStatus(w io.Writer, rep statusReport, now time.Time) {
	if len(rep.Targets) == 0 {
		fmt.Fprintf(w, "no targets: none configured, and none in Redis or stream %s\n", rep.Stream)
		return
	}
	ago := func(t time.Time) string { return humanDuration(now.Sub(t)) + " ago" }
	for i, t := range rep.Targets {
		if i > 0 {
			fmt.Fprintln(w)
		}
		switch {
		case t.Configured && t.Pathling != "":
			fmt.Fprintf(w, "target %s (configured, Pathling %s)\n", t.Name, t.Pathling)
		case t.Configured:
			fmt.Fprintf(w, "target %s (configured)\n", t.Name)
		case rep.configured:
			fmt.Fprintf(w, "target %s (not in this configuration)\n", t.Name)
		default:
			fmt.Fprintf(w, "target %s\n", t.Name)
		}
		if t.Lock == nil {
			fmt.Fprintln(w, "  lock:        free")
		} else {
			fmt.Fprintf(w, "  lock:        held by %s (token %d, expires in %s)\n", t.Lock.RequestID, t.Lock.Token, humanDuration(time.Duration(t.Lock.TTLMs)*time.Millisecond))
		}
		if len(t.Running) == 0 {
			fmt.Fprintln(w, "  running:     none")
		} else {
			fmt.Fprintln(w, "  running:")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "    REQUEST\tSTATE\tPOLLS\tPROGRESS\tENDS\tATTEMPTS\tAGE\tDRIVER\tRUN\tPATHLING JOB")
			for _, r := range t.Running {
				fmt.Fprintf(tw, "    %s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.RequestID, r.State, r.Polls, orDash(r.Progress),
					expectedEnd(r.ExpectedEnd, now), r.Attempts, humanDuration(time.Duration(r.AgeSeconds)*time.Second), orDash(r.Driver), r.RunID, orDash(r.StatusURL))
			}
			tw.Flush()
		}
		if len(t.Queue) == 0 {
			fmt.Fprintln(w, "  queue:       empty")
		} else {
			ids := make([]string, len(t.Queue))
			for i, q := range t.Queue {
				ids[i] = fmt.Sprintf("%s (seq %d)", q.RequestID, q.Seq)
			}
			fmt.Fprintf(w, "  queue:       %d waiting: %s\n", len(t.Queue), strings.Join(ids, ", "))
		}
		if len(t.Watermarks) == 0 {
			fmt.Fprintln(w, "  watermarks:  none (the next since=auto sync is a full one)")
		} else {
			fmt.Fprintln(w, "  watermarks:")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, m := range t.Watermarks {
				fmt.Fprintf(tw, "    %s\t%s\t(%s)\n", m.Key, m.Time.Format(timeFormat), ago(m.Time))
			}
			tw.Flush()
		}
		if t.LastOutcome == nil {
			fmt.Fprintln(w, "  last:        no outcome in the stream")
		} else {
			lo := t.LastOutcome
			fmt.Fprintf(w, "  last:        #%d %s %s (%s) %s: %s\n", lo.Seq, lo.Kind, lo.Time.Format(timeFormat), ago(lo.Time), lo.RequestID, lo.Summary)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanDuration rounds d for reading: 850ms, 42s, 3m12s, 5h4m, 3d4h.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + humanDuration(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		days := int(d / (24 * time.Hour))
		return fmt.Sprintf("%dd%dh", days, int((d-time.Duration(days)*24*time.Hour)/time.Hour))
	}
}

// expectedEnd says when a running job is expected to end, relative to now
// ("in 42s", "overdue 5s"), or "-" when unknown.
func expectedEnd(end, now time.Time) string {
	switch {
	case end.IsZero():
		return "-"
	case end.Before(now):
		return "overdue " + humanDuration(now.Sub(end))
	default:
		return "in " + humanDuration(end.Sub(now))
	}
}
