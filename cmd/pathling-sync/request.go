package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/clients/streamhistory"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

type requestOptions struct {
	target, id                          string
	exportURL, saveMode, since, until   string
	types, typeFilters, elements, assoc []string
	concurrency, timeout                string
	correlationID, requestedBy          string
	wait                                bool
	waitTimeout                         time.Duration
	jsonOut                             bool
}

func newRequestCmd(g *globals) *cobra.Command {
	o := &requestOptions{}
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Publish a SyncRequested; with --wait, follow it to its outcome (exit 0 completed, 1 failed)",
		Long: `request publishes a SyncRequested event for a target. Flags left unset fall back to
the seed script's variables: SOURCE_EXPORT_URL, SAVE_MODE, RESOURCE_TYPES, SINCE and
TIMEOUT (seconds), so that a crontab line written for sync.sh works with
"pathling-sync request --wait" in its place. Fields still empty take the target's
defaults in the service.

While waiting it shows live progress read from the run record in Redis: the
phase (waiting, starting, kicking_off, polling), the polls so far, Pathling's
X-Progress and the elapsed time. On a terminal that is one line redrawn in
place; otherwise (cron, a log file) a plain line whenever it changes, and at
least every 15 s. Redis is optional: without one configured (REDIS_URL,
--config or a running dev), or when it does not answer, it says so in one line
and waits all the same, printing the elapsed time.

It needs no Pathling URL and checks none of the service's configuration:
PATHLING_URL, if set, is ignored.

TRACEPARENT (and TRACESTATE), when set, make the sync continue the caller's trace.

NATS is found through NATS_URL, else --config, else the address a running
"pathling-sync dev" wrote, else 127.0.0.1:4222; Redis likewise, but never at a
default address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRequest(cmd.Context(), g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.target, "target", "default", "target (a configured Pathling)")
	f.StringVar(&o.id, "id", "", "request id (default: a new UUID); the same id is deduplicated")
	f.StringVar(&o.exportURL, "export-url", "", "source FHIR base or $export URL (env SOURCE_EXPORT_URL)")
	f.StringVar(&o.saveMode, "save-mode", "", "merge|overwrite|append|ignore|error (env SAVE_MODE)")
	f.StringSliceVar(&o.types, "types", nil, "resource types, comma-separated (env RESOURCE_TYPES)")
	f.StringVar(&o.since, "since", "", `an instant, or "auto" for the stored watermark (env SINCE)`)
	f.StringVar(&o.until, "until", "", "an instant")
	f.StringArrayVar(&o.typeFilters, "type-filter", nil, "a _typeFilter value (repeatable)")
	f.StringArrayVar(&o.elements, "element", nil, "an _elements value (repeatable)")
	f.StringArrayVar(&o.assoc, "include-associated-data", nil, "an includeAssociatedData code (repeatable)")
	f.StringVar(&o.concurrency, "concurrency", "", "forbid|queue, when the target is busy")
	f.StringVar(&o.timeout, "timeout", "", "timeout of the whole sync, e.g. 2h (env TIMEOUT in seconds)")
	f.StringVar(&o.correlationID, "correlation-id", "", "echoed in the outcome")
	f.StringVar(&o.requestedBy, "requested-by", "", "who asks (echoed in the outcome)")
	f.BoolVar(&o.wait, "wait", false, "wait for the outcome; exit 0 on SyncCompleted, 1 on SyncFailed")
	f.DurationVar(&o.waitTimeout, "wait-timeout", 0, "give up waiting after this long (default: the sync's timeout + 5m, or 2h5m)")
	f.BoolVar(&o.jsonOut, "json", false, "print the outcome event body as JSON only")
	return cmd
}

// body builds the SyncRequested from flags, then the seed's variables.
func (o *requestOptions) body(env func(string) string) (messages.SyncRequested, error) {
	pick := func(flag, envName string) string {
		if flag != "" {
			return flag
		}
		return strings.TrimSpace(env(envName))
	}
	r := messages.SyncRequested{
		ExportURL:             pick(o.exportURL, "SOURCE_EXPORT_URL"),
		SaveMode:              pick(o.saveMode, "SAVE_MODE"),
		Since:                 pick(o.since, "SINCE"),
		Until:                 o.until,
		Types:                 o.types,
		TypeFilters:           o.typeFilters,
		Elements:              o.elements,
		IncludeAssociatedData: o.assoc,
		Concurrency:           o.concurrency,
		Timeout:               o.timeout,
		CorrelationID:         o.correlationID,
		RequestedBy:           o.requestedBy,
	}
	if len(r.Types) == 0 {
		if v := strings.TrimSpace(env("RESOURCE_TYPES")); v != "" {
			for _, t := range strings.Split(v, ",") {
				if t = strings.TrimSpace(t); t != "" {
					r.Types = append(r.Types, t)
				}
			}
		}
	}
	if r.Timeout == "" {
		if v := strings.TrimSpace(env("TIMEOUT")); v != "" {
			secs, err := strconv.Atoi(v)
			if err != nil || secs <= 0 {
				return r, fmt.Errorf("TIMEOUT: %q is not a positive number of seconds", v)
			}
			r.Timeout = (time.Duration(secs) * time.Second).String()
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	// Validate here with the service's own rules: a typo fails now, not in a SyncFailed.
	if _, err := messages.DecodeRequested(b); err != nil {
		return r, err
	}
	return r, nil
}

// clientConfig finds NATS, Redis and the stream for the client commands
// (request, status, events, replay). Each connection comes from the
// environment (NATS_URL / REDIS_URL, or their PATHLING_SYNC_ forms), else
// --config, else the addresses a running "pathling-sync dev" wrote to its
// data folder, else the defaults (127.0.0.1:4222 and :6379). Only these are
// validated: a client never needs a target's Pathling URL or secrets.
func (g *globals) clientConfig() (*config.Client, error) {
	cfg, err := config.LoadClient(g.configPath, g.env)
	if err != nil {
		return nil, usageError{err}
	}
	if g.configPath != "" {
		return cfg, nil
	}
	a, err := devenv.ReadAddrs(devenv.DefaultDir())
	if err != nil {
		return cfg, nil // no dev running here: the environment and defaults stand
	}
	if a.NATSURL != "" && g.env("NATS_URL") == "" && g.env("PATHLING_SYNC_NATS_URL") == "" {
		cfg.NATS.URL = config.SecretURL(a.NATSURL)
	}
	if a.RedisURL != "" && g.env("REDIS_URL") == "" && g.env("PATHLING_SYNC_REDIS_URL") == "" &&
		len(cfg.Redis.Addrs) == 0 && cfg.Redis.Sentinel.MasterName == "" {
		cfg.Redis.URL = config.SecretURL(a.RedisURL)
		cfg.RedisSet = true
	}
	return cfg, nil
}

// openJetStream connects a client command to NATS. Errors wrap errInfra
// (unreachable) or are configuration errors.
func openJetStream(cfg *config.Client, name string, g *globals) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connectNATS(cfg.NATS, name, newLogger(g.stderr, config.LogConfig{Level: "error"}))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%w: jetstream: %v", errInfra, err)
	}
	return nc, js, nil
}

// openStore connects a client command to Redis, for the read-only views of
// runs, locks and watermarks. The returned func closes the connection.
// Errors wrap errInfra (unreachable) or are configuration errors.
func openStore(ctx context.Context, cfg *config.Client) (*redisstore.Store, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rdb, err := connectRedis(ctx, cfg.Redis)
	if err != nil {
		return nil, nil, err
	}
	return redisstore.New(rdb, redisstore.WithPrefix(cfg.Redis.KeyPrefix)), func() { _ = rdb.Close() }, nil
}

// openProgressStore connects request --wait to Redis for live progress.
// Redis is optional there: it is used only when configured. Without it,
// unavailable says why in a few words (no go-redis detail: the caller goes
// on without progress).
func openProgressStore(ctx context.Context, cfg *config.Client) (store *redisstore.Store, closeStore func(), unavailable string) {
	if !cfg.RedisSet {
		return nil, nil, "Redis not configured (REDIS_URL)"
	}
	store, closeStore, err := openStore(ctx, cfg)
	switch {
	case errors.Is(err, errInfra):
		return nil, nil, fmt.Sprintf("Redis at %s unreachable", redisWhere(cfg.Redis))
	case err != nil:
		return nil, nil, fmt.Sprintf("Redis configuration: %v", err)
	}
	return store, closeStore, ""
}

// redisWhere names the configured Redis for messages, without secrets.
func redisWhere(r config.RedisConfig) string {
	switch {
	case len(r.Addrs) > 0:
		return strings.Join(r.Addrs, ",")
	case r.Sentinel.MasterName != "":
		return fmt.Sprintf("%s (Sentinel master %s)", strings.Join(r.Sentinel.Addrs, ","), r.Sentinel.MasterName)
	}
	return r.URL.String()
}

func runRequest(ctx context.Context, g *globals, o *requestOptions) error {
	if !messages.ValidTarget(o.target) {
		return usageError{fmt.Errorf("--target %q: must match [A-Za-z0-9_-]{1,64}", o.target)}
	}
	req, err := o.body(g.env)
	if err != nil {
		return usageError{err}
	}
	cfg, err := g.clientConfig()
	if err != nil {
		return err
	}
	h, js, closeConn, err := openHistory(cfg, "pathling-sync request", g)
	if err != nil {
		return err
	}
	defer closeConn()
	id := o.id
	if id == "" {
		id = uuid.NewString()
	}

	var outcome *streamhistory.OutcomeWatch
	if o.wait {
		// Listen before publishing, so that even a fast outcome is seen.
		outcome, err = h.WatchOutcome(ctx, o.target, id)
		if err != nil {
			return fmt.Errorf("%w: %v", errInfra, err)
		}
		defer outcome.Stop()
	}

	body, _ := json.Marshal(req)
	// A caller's trace (e.g. a pipeline step) continues into the sync.
	env := messages.NewRequestEnvelope(id, cliSource, o.target, g.clock.Now(),
		messages.WithTraceContext(strings.TrimSpace(g.env("TRACEPARENT")), strings.TrimSpace(g.env("TRACESTATE"))))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ack, err := natsbus.PublishRequest(pctx, js, h.Subjects().Requested(o.target), env, body)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: publish SyncRequested: %v", errInfra, err)
	}
	if !o.jsonOut {
		dup := ""
		if ack.Duplicate {
			dup = " (duplicate id: already published)"
		}
		fmt.Fprintf(g.stdout, "requested sync %s of target %q (stream %s, seq %d)%s\n", id, o.target, ack.Stream, ack.Sequence, dup)
	}
	if !o.wait {
		if o.jsonOut {
			fmt.Fprintf(g.stdout, "{\"requestId\":%q,\"stream\":%q,\"seq\":%d}\n", id, ack.Stream, ack.Sequence)
		}
		return nil
	}
	w := &waiter{g: g, o: o, target: o.target, requestID: id, clock: g.clock}
	if !o.jsonOut {
		// Live progress comes from the run record in Redis; without Redis the
		// wait still works, with elapsed time only.
		store, closeStore, unavailable := openProgressStore(ctx, cfg)
		if unavailable != "" {
			fmt.Fprintf(g.stderr, "progress unavailable: %s; waiting for the outcome on NATS only\n", unavailable)
		} else {
			defer closeStore()
			w.runs = store
		}
	}
	return w.wait(ctx, req, outcome.Outcome())
}

// cliSource is the CloudEvents source of the requests the CLI publishes
// (request, replay).
const cliSource = "pathling-sync-cli"

// waiter shows a published request's progress until its outcome arrives.
type waiter struct {
	g         *globals
	o         *requestOptions
	target    string
	requestID string
	runs      runLoader // nil: no live progress
	clock     clock.Clock
}

func (w *waiter) wait(ctx context.Context, req messages.SyncRequested, outcome <-chan streamhistory.Event) error {
	limit := w.o.waitTimeout
	if limit <= 0 {
		limit = 2*time.Hour + 5*time.Minute
		if d, ok := req.TimeoutDuration(); ok {
			limit = d + 5*time.Minute
		}
	}
	progress := newProgressPrinter(w.g.stdout, w.clock.Now())
	deadline := w.clock.After(limit)
	tick := w.clock.After(progressInterval)
	for {
		select {
		case <-ctx.Done():
			progress.finish()
			return usageError{errors.New("interrupted while waiting; the sync goes on in the service")}
		case <-deadline:
			progress.finish()
			return fmt.Errorf("%w: no outcome within %s", errInfra, limit)
		case now := <-tick:
			if !w.o.jsonOut {
				progress.show(now, loadProgress(ctx, w.runs, w.target, w.requestID))
			}
			tick = w.clock.After(progressInterval)
		case ev := <-outcome:
			progress.finish()
			return printOutcome(w.g, w.o, ev)
		}
	}
}

func printOutcome(g *globals, o *requestOptions, ev streamhistory.Event) error {
	failed := ev.Header.Get(messages.HeaderType) == messages.TypeFailed
	if o.jsonOut {
		fmt.Fprintln(g.stdout, string(ev.Data))
	} else if failed {
		var f messages.SyncFailed
		_ = json.Unmarshal(ev.Data, &f)
		fmt.Fprintf(g.stdout, "SyncFailed: %s (retryable: %t): %s\n", f.Reason, f.Retryable, f.Message)
		fmt.Fprintln(g.stdout, indentJSON(ev.Data))
	} else {
		var c messages.SyncCompleted
		_ = json.Unmarshal(ev.Data, &c)
		empty := ""
		if c.Empty {
			empty = ", no changes"
		}
		next := c.Watermark
		if next == "" {
			next = "a full export (no watermark stored)"
		}
		fmt.Fprintf(g.stdout, "SyncCompleted in %s: %s imported%s, %s; next since=auto: %s\n",
			time.Duration(c.DurationMs)*time.Millisecond, plural(c.Outputs, "file"), empty, plural(c.Polls, "poll"), next)
		fmt.Fprintln(g.stdout, indentJSON(ev.Data))
	}
	if failed {
		return errSyncFailed
	}
	return nil
}

func indentJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}
