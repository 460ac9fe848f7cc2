// Command bulk-source-emulator serves the emulated FHIR Bulk Data source
// (package emulators/source) on a TCP address until SIGINT or SIGTERM.
//
//	bulk-source-emulator --addr 127.0.0.1:8081 --patients 100 --seed 1 --export-polls 2
//
// The FHIR base is http://<addr>/fhir; the control API is under /_source/ (see
// emulators/source/README.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/pathling-sync/pathling-sync/emulators/source"
)

// errUsage marks command-line mistakes (exit code 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bulk-source-emulator:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run parses args, serves until ctx is cancelled, then shuts down gracefully. It prints the
// FHIR base URL on stdout once listening.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulk-source-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr         = fs.String("addr", "127.0.0.1:8081", "listen address")
		patients     = fs.Int("patients", source.DefaultPatients, "patients in the synthetic dataset (negative: none)")
		seed         = fs.Int64("seed", 1, "seed of the synthetic dataset")
		exportPolls  = fs.Int("export-polls", 1, "status polls answered 202 before an export completes")
		exportDelay  = fs.Duration("export-delay", 0, "minimum time an export stays in progress")
		retryAfter   = fs.Duration("retry-after", source.DefaultRetryAfter, "Retry-After on 202 status responses (negative: none)")
		perFile      = fs.Int("resources-per-file", source.DefaultResourcesPerFile, "resources per NDJSON file")
		baseURL      = fs.String("base-url", "", "origin for absolute URLs (default: from each request's Host)")
		authClients  = fs.String("auth-clients", "", `JSON file {"<client_id>": <public JWK set>, ...}; turns on SMART Backend Services auth`)
		tokenTTL     = fs.Duration("token-lifetime", 0, "access token lifetime with --auth-clients (default 5m)")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		shutdownWait = fs.Duration("shutdown-timeout", 10*time.Second, "how long to wait for requests in flight on shutdown")
		clockOffset  = fs.Duration("clock-offset", 0, "added to the real clock (lastUpdated, transactionTime, token expiry); negative: the source runs behind, to test clock skew")
	)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := source.Config{
		Seed: *seed, Patients: *patients,
		ExportPolls: *exportPolls, ExportDelay: *exportDelay, RetryAfter: *retryAfter,
		ResourcesPerFile: *perFile, BaseURL: *baseURL, Logger: logger,
	}
	if *clockOffset != 0 {
		offset := *clockOffset
		cfg.Clock = func() time.Time { return time.Now().Add(offset) }
	}
	if *authClients != "" {
		clients, err := readClients(*authClients)
		if err != nil {
			return fmt.Errorf("%w: --auth-clients: %v", errUsage, err)
		}
		cfg.Auth = &source.AuthConfig{Clients: clients, TokenLifetime: *tokenTTL}
	}
	src, err := source.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	defer src.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: src, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "bulk-source-emulator: FHIR base http://%s/fhir (control API http://%s/_source/)\n", ln.Addr(), ln.Addr())
	logger.Info("listening", "addr", ln.Addr().String(), "patients", *patients, "seed", *seed, "auth", cfg.Auth != nil)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *shutdownWait)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// readClients loads {"client_id": JWKS, ...}.
func readClients(path string) (map[string]jose.JSONWebKeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var clients map[string]jose.JSONWebKeySet
	if err := json.Unmarshal(b, &clients); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("%s: no clients", path)
	}
	return clients, nil
}
