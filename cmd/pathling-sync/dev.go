package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/config"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/emulators/source"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
)

type devOptions struct {
	dataDir  string
	patients int
	logLevel string
}

func newDevCmd(g *globals) *cobra.Command {
	o := &devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process on embedded defaults: NATS JetStream, a Redis-protocol store, the Pathling and source emulators, and the service",
		Long: `dev starts, in this one process:
  - an in-process NATS JetStream server (data under the data folder),
  - an embedded Redis-protocol server (or the Redis at REDIS_URL),
  - a FHIR Bulk Data source emulator with sample data,
  - the Pathling emulator (pull mode: it really exports from the source),
  - a second Pathling emulator, the target "replica",
  - the sync service, with the target "default" pointing at them, and the
    chain rule "default-to-replica": every sync of "default" that imported
    something requests a sync of "replica" (since auto, same source).
It prefers the usual ports (4222, 6379, 8080, 8081, 8082, 9464) and takes free ones
when those are busy; the addresses go to <data folder>/addrs.json, where
"pathling-sync request" finds them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), g, o) },
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", devenv.DefaultDir(), "data folder (NATS store, addrs.json); env PATHLING_SYNC_DATA_DIR")
	cmd.Flags().IntVar(&o.patients, "patients", 25, "patients in the source emulator's sample data")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "log level")
	return cmd
}

func runDev(ctx context.Context, g *globals, o *devOptions) error {
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return usageError{fmt.Errorf("data folder: %w", err)}
	}
	log := newLogger(g.stderr, config.LogConfig{Level: o.logLevel, Format: "text"})
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	ns, natsURL, err := devenv.StartNATS(ctx, o.dataDir, 4222)
	if err != nil {
		return fmt.Errorf("%w: embedded NATS: %v", errInfra, err)
	}
	closers = append(closers, func() { ns.Shutdown(); ns.WaitForShutdown() })

	redisURL := g.env("REDIS_URL")
	if redisURL == "" {
		addr, stop, err := devenv.StartRedis(ctx, 6379)
		if err != nil {
			return fmt.Errorf("%w: embedded Redis: %v", errInfra, err)
		}
		closers = append(closers, stop)
		redisURL = "redis://" + addr + "/0"
	}

	src, err := source.New(source.Config{Seed: 1, Patients: o.patients, Logger: log.With("component", "source-emulator")})
	if err != nil {
		return err
	}
	closers = append(closers, src.Close)
	srcURL, stopSrc, err := serveDev("127.0.0.1:8081", src)
	if err != nil {
		return err
	}
	closers = append(closers, stopSrc)
	sourceBase := srcURL + "/fhir"

	emu, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{sourceBase},
		AllowInsecureURLs:   true,
		AllowInternalURLs:   true,
		Mode:                pathlingemu.ModePull,
		Logger:              log.With("component", "pathling-emulator"),
	})
	if err != nil {
		return err
	}
	closers = append(closers, emu.Close)
	pathlingURL, stopEmu, err := serveDev("127.0.0.1:8080", emu)
	if err != nil {
		return err
	}
	closers = append(closers, stopEmu)

	// A second Pathling, kept in step with the first by a chain rule.
	replica, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{sourceBase},
		AllowInsecureURLs:   true,
		AllowInternalURLs:   true,
		Mode:                pathlingemu.ModePull,
		Logger:              log.With("component", "pathling-emulator-replica"),
	})
	if err != nil {
		return err
	}
	closers = append(closers, replica.Close)
	replicaURL, stopReplica, err := serveDev("127.0.0.1:8082", replica)
	if err != nil {
		return err
	}
	closers = append(closers, stopReplica)

	adminAddr, err := preferredAddr("127.0.0.1:9464")
	if err != nil {
		return err
	}
	cfg := config.Default()
	cfg.NATS.URL = config.SecretURL(natsURL)
	cfg.Redis.URL = config.SecretURL(redisURL)
	cfg.Admin.Addr = adminAddr
	cfg.Log = config.LogConfig{Level: o.logLevel, Format: "text"}
	cfg.Service.InstanceID = "dev"
	t := config.DefaultTarget()
	t.Pathling.URL = pathlingURL + "/fhir"
	t.Defaults.ExportURL = sourceBase
	t.Defaults.SaveMode = "merge"
	// The emulator finishes in about a second: poll faster than the seed's 5 s start.
	t.Poll.BackoffConfig = config.BackoffConfig{Initial: time.Second, Factor: 1.5, Max: 10 * time.Second, Jitter: 0.1}
	t.Retry = config.BackoffConfig{Initial: 2 * time.Second, Factor: 2, Max: 30 * time.Second, Jitter: 0.1}
	r := t
	r.Pathling.URL = replicaURL + "/fhir"
	cfg.Targets = map[string]config.TargetConfig{"default": t, devReplicaTarget: r}
	// The replica is fed from the same source (our Pathling emulator has no
	// $export), incrementally, after every sync of "default" that imported
	// something.
	cfg.Chains = []config.ChainConfig{{
		Name:    devChain,
		On:      config.ChainTrigger{Target: "default", NonEmpty: true},
		Request: config.ChainRequest{Target: devReplicaTarget, RequestDefaults: config.RequestDefaults{Since: "auto"}},
	}}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("dev configuration: %w", err)
	}

	svc, err := NewService(ctx, cfg, log, WithEnv(g.env))
	if err != nil {
		return err
	}
	addrs := devenv.Addrs{
		NATSURL: natsURL, RedisURL: redisURL, PathlingURL: pathlingURL + "/fhir", SourceURL: sourceBase,
		AdminAddr: svc.AdminAddr(), PID: os.Getpid(),
	}
	if err := devenv.WriteAddrs(o.dataDir, addrs); err != nil {
		svc.Close()
		return err
	}
	closers = append(closers, func() { _ = os.Remove(filepath.Join(o.dataDir, "addrs.json")) })
	printDevBanner(g, addrs, replicaURL+"/fhir")
	return svc.Run(ctx)
}

// serveDev serves h on addr, or on a free port of the same host when addr
// is busy; it returns the base URL and a stop function.
func serveDev(addr string, h http.Handler) (string, func(), error) {
	ln, err := devenv.ListenPreferred(addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("dev server", "addr", ln.Addr().String(), "error", err)
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
		wg.Wait()
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// preferredAddr returns addr if it is free now, else a free port on its host.
func preferredAddr(addr string) (string, error) {
	ln, err := devenv.ListenPreferred(addr)
	if err != nil {
		return "", err
	}
	a := ln.Addr().String()
	ln.Close()
	return a, nil
}

// The second target of dev and the chain rule that feeds it.
const (
	devReplicaTarget = "replica"
	devChain         = "default-to-replica"
)

func printDevBanner(g *globals, a devenv.Addrs, replicaURL string) {
	host, port, _ := net.SplitHostPort(a.AdminAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "\npathling-sync dev is running (Ctrl-C stops it)\n")
	fmt.Fprintf(&b, "  NATS JetStream   %s\n", a.NATSURL)
	fmt.Fprintf(&b, "  Redis            %s\n", a.RedisURL)
	fmt.Fprintf(&b, "  Pathling (emu)   %s   target \"default\"\n", a.PathlingURL)
	fmt.Fprintf(&b, "  Replica (emu)    %s   target %q, chained: after each non-empty sync of \"default\" (chain %s, since auto)\n", replicaURL, devReplicaTarget, devChain)
	fmt.Fprintf(&b, "  Source (emu)     %s\n", a.SourceURL)
	fmt.Fprintf(&b, "  Admin            http://%s:%s/readyz\n", host, port)
	fmt.Fprintf(&b, "\nIn another terminal:\n")
	fmt.Fprintf(&b, "  go run ./cmd/pathling-sync request --wait                 # full sync of target \"default\"\n")
	fmt.Fprintf(&b, "  go run ./cmd/pathling-sync request --wait --since auto    # incremental sync from the watermark\n")
	fmt.Fprintf(&b, "  (each sync of \"default\" that imports something then syncs %q too: see the log)\n\n", devReplicaTarget)
	fmt.Fprint(g.stdout, b.String())
}
