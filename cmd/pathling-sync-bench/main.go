// Command pathling-sync-bench measures the real `pathling-sync serve`
// binary: it starts (or is given) NATS JetStream and Redis, a fast
// multi-tenant Pathling stand-in, builds and runs the service as a separate
// process with a generated configuration, publishes real SyncRequested
// events and reads the outcomes from the stream. Each scenario also runs
// floorbench, the primitive-floor tool, given with -floor, on the same
// servers, and prints the ratio. A table goes to stderr, one JSON line per
// scenario to stdout. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pathling-sync/pathling-sync/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pathling-sync-bench:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pathling-sync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Bool("short", false, "small sizes: proves the command works in well under a minute")
	// The sizes' defaults depend on -short: parse it first.
	for _, a := range args {
		if a == "-short" || a == "--short" || a == "-short=true" || a == "--short=true" {
			*short = true
		}
	}
	o := bench.DefaultOptions(*short)
	scenarios := fs.String("scenario", "all", "scenarios to run, comma-separated: all, "+names())
	natsURL := fs.String("nats", os.Getenv("PATHLING_SYNC_BENCH_NATS_URL"), "NATS URL to use (default: an embedded nats-server; env PATHLING_SYNC_BENCH_NATS_URL). Its stream PATHLING_SYNC is deleted and recreated")
	redisURL := fs.String("redis", os.Getenv("PATHLING_SYNC_BENCH_REDIS_URL"), "Redis URL to use (default: a redis-server from PATH on a free port, no persistence; env PATHLING_SYNC_BENCH_REDIS_URL)")
	fs.StringVar(&o.FloorDir, "floor", os.Getenv("FLOORBENCH"), "directory of floorbench, the primitive-floor tool (env FLOORBENCH); without it the floor is skipped")
	bin := fs.String("bin", "", "pathling-sync binary to run (default: build ./cmd/pathling-sync)")
	workDir := fs.String("workdir", "", "where configurations, service logs and profiles go (default: a new temp dir, kept)")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "the service's log level")
	fs.BoolVar(&o.PProf, "pprof", false, "throughput, inflight, storm: turn admin.pprof on; save CPU profiles of the flood and the storm, and heap and goroutine profiles and MemStats at the end of the in-flight window, in the work dir")
	fs.IntVar(&o.ProfileSeconds, "profile-seconds", o.ProfileSeconds, "length of that profile")
	fs.DurationVar(&o.MonitorWindow, "monitor-window", o.MonitorWindow, "how long Redis MONITOR samples a scenario for the old client-commands estimate (0: off; round trips come from the service's own counter)")
	fs.IntVar(&o.Throughput.N, "throughput-n", o.Throughput.N, "throughput: requests")
	fs.IntVar(&o.Throughput.Targets, "throughput-targets", o.Throughput.Targets, "throughput: targets")
	fs.IntVar(&o.Throughput.Workers, "throughput-workers", o.Throughput.Workers, "throughput: nats.consumer.maxWorkers")
	rates := fs.String("paced-rates", joinRates(o.Paced.Rates), "paced: rates per second, comma-separated")
	fs.DurationVar(&o.Paced.Duration, "paced-duration", o.Paced.Duration, "paced: how long each rate publishes")
	fs.IntVar(&o.Paced.Targets, "paced-targets", o.Paced.Targets, "paced: targets")
	fs.IntVar(&o.Inflight.N, "inflight-n", o.Inflight.N, "inflight: syncs held in flight (and targets configured)")
	fs.DurationVar(&o.Inflight.Window, "inflight-window", o.Inflight.Window, "inflight: measurement window once all are in flight")
	fs.IntVar(&o.Storm.N, "storm-n", o.Storm.N, "storm: requests for the one busy target")
	fs.IntVar(&o.Queue.Pairs, "queue-pairs", o.Queue.Pairs, "queue: targets, each with a running and a queued request")
	fs.IntVar(&o.Freshness.Targets, "freshness-targets", o.Freshness.Targets, "freshness: targets per policy (history, seed)")
	fs.IntVar(&o.Freshness.Warmup, "freshness-warmup", o.Freshness.Warmup, "freshness: syncs per target before measuring")
	fs.IntVar(&o.Freshness.Syncs, "freshness-syncs", o.Freshness.Syncs, "freshness: measured syncs per target")
	fs.Float64Var(&o.Freshness.Compress, "freshness-compress", o.Freshness.Compress, "freshness: time compression (job durations and poll cadence divided by it)")
	fs.StringVar(&o.Freshness.Progress, "freshness-progress", o.Freshness.Progress, "freshness: X-Progress off, on, or both (a trial each)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	o.Paced.Rates = nil
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("%w: -paced-rates: %q is not a positive rate", errUsage, s)
		}
		o.Paced.Rates = append(o.Paced.Rates, r)
	}
	var chosen []bench.Scenario
	for _, name := range strings.Split(*scenarios, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, s := range bench.Scenarios() {
			if name == "all" || name == s.Name {
				chosen, found = append(chosen, s), true
			}
		}
		if !found {
			return fmt.Errorf("%w: -scenario: unknown %q (known: all, %s)", errUsage, name, names())
		}
	}

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if o.FloorDir != "" && !filepath.IsAbs(o.FloorDir) {
		o.FloorDir, _ = filepath.Abs(o.FloorDir)
	}
	if *workDir == "" {
		if *workDir, err = os.MkdirTemp("", "pathling-sync-bench-"); err != nil {
			return err
		}
	}
	o.WorkDir, _ = filepath.Abs(*workDir)
	if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
		return err
	}
	if *bin == "" {
		fmt.Fprintln(stderr, "building ./cmd/pathling-sync ...")
		if *bin, err = bench.BuildService(ctx, root, o.WorkDir); err != nil {
			return err
		}
	}
	srv, err := bench.StartServers(ctx, o.WorkDir, *natsURL, *redisURL)
	if err != nil {
		return err
	}
	defer srv.Close()
	env, err := bench.NewEnv(ctx, o, srv, *bin)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Fprintf(stderr, "pathling-sync-bench: NATS %s, Redis %s, work dir %s\n", srv.NATSURL, srv.RedisURL, o.WorkDir)
	if o.FloorDir == "" {
		fmt.Fprintln(stderr, "floor: skipped (no floorbench given: -floor DIR or FLOORBENCH); ratios are left out")
	}
	enc := json.NewEncoder(stdout)
	for _, s := range chosen {
		fmt.Fprintf(stderr, "-- %s: %s\n", s.Name, s.Doc)
		start := time.Now()
		reports, err := s.Run(ctx, env)
		if err != nil {
			return fmt.Errorf("%s: %w (service logs in %s)", s.Name, err, o.WorkDir)
		}
		for _, r := range reports {
			r.Params["scenarioSeconds"] = int(time.Since(start).Seconds())
			r.WriteTable(stderr)
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func names() string {
	var n []string
	for _, s := range bench.Scenarios() {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func joinRates(rs []float64) string {
	var s []string
	for _, r := range rs {
		s = append(s, strconv.FormatFloat(r, 'f', -1, 64))
	}
	return strings.Join(s, ",")
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it inside the pathling-sync module (no go.mod found above the working directory)")
		}
		dir = parent
	}
}
