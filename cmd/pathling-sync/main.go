// Command pathling-sync keeps Pathling servers in sync with FHIR Bulk Data
// sources, driven by SyncRequested events on NATS JetStream.
//
// Exit codes: 0 success, 1 sync failed, 2 usage or configuration error,
// 3 infrastructure (NATS, Redis) unreachable.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/observability"
)

// Exit codes of the contract (§7).
const (
	exitOK         = 0
	exitSyncFailed = 1
	exitUsage      = 2
	exitInfra      = 3
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// errSyncFailed is returned by `request --wait` when the outcome is SyncFailed.
var errSyncFailed = errors.New("sync failed")

// usageError marks bad flags or configuration (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	// go-redis logs dial failures itself, through a process-wide logger, to
	// stderr: a cron log would get four raw lines per unreachable Redis, next
	// to our own message. Our errors say what matters; its lines go to debug.
	redis.SetLogger(redisLogger{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// redisLogger passes go-redis' own log lines to slog's default logger at
// debug level, which drops them unless a program raises it.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// run executes the command line and maps the outcome to an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	root := newRootCmd(stdout, stderr, env)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errSyncFailed):
		return exitSyncFailed
	case errors.Is(err, errInfra):
		fmt.Fprintln(stderr, "error:", err)
		return exitInfra
	default:
		fmt.Fprintln(stderr, "error:", err)
		return exitUsage
	}
}

type globals struct {
	clock      clock.Clock // time the client commands read (tests may set it)
	configPath string
	stdout     io.Writer
	stderr     io.Writer
	env        func(string) string
}

func newRootCmd(stdout, stderr io.Writer, env func(string) string) *cobra.Command {
	g := &globals{clock: clock.System{}, stdout: stdout, stderr: stderr, env: env}
	root := &cobra.Command{
		Use:           "pathling-sync",
		Short:         "Keep Pathling in sync with FHIR Bulk Data sources, driven by NATS JetStream events",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.configPath, "config", env("PATHLING_SYNC_CONFIG"), "YAML configuration file (env PATHLING_SYNC_CONFIG)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCmd(g), newDevCmd(g), newRequestCmd(g), newEnvCmd(g), newStatusCmd(g), newEventsCmd(g), newReplayCmd(g))
	return root
}

// loadConfig loads the configuration file and environment.
func (g *globals) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(g.configPath, g.env)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

// newLogger returns the logger of c's level and format (JSON by default);
// records logged with a context holding a span carry trace_id and span_id.
func newLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(observability.NewLogHandler(h))
}

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the service: consume SyncRequested, drive Pathling, publish outcomes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if len(cfg.Targets) == 0 {
				return usageError{errors.New("no targets configured (set targets in --config, or PATHLING_URL for the default target)")}
			}
			log := newLogger(g.stderr, cfg.Log)
			svc, err := NewService(cmd.Context(), cfg, log, WithEnv(g.env))
			if err != nil {
				return err
			}
			return svc.Run(cmd.Context())
		},
	}
}
