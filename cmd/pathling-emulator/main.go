// Command pathling-emulator serves the Pathling $import-pnp emulator (package
// emulators/pathling) over HTTP, for development and manual testing.
//
//	pathling-emulator --addr 127.0.0.1:8080 --mode pull --allow-export-url http://127.0.0.1:8081/fhir
//
// The FHIR API is under /fhir, the control API under /_emulator (see
// emulators/pathling/README.md). It stops gracefully on SIGINT or SIGTERM.
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
	"strings"
	"syscall"
	"time"

	"github.com/pathling-sync/pathling-sync/emulators/pathling"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pathling-emulator:", err)
		os.Exit(2)
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// run parses args, serves until ctx is done, then shuts down. ready, when set, receives the
// address actually bound (useful with port 0).
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("pathling-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr          = fs.String("addr", "127.0.0.1:8080", "address to listen on")
		mode          = fs.String("mode", "pull", "job mode: pull (really export from the source) or scripted (control API decides)")
		allowInsecure = fs.Bool("allow-insecure", true, "accept plain http:// export URLs (pathling.allowInsecureUrls; dev default on)")
		allowInternal = fs.Bool("allow-internal", true, "accept export URLs on loopback/private addresses (pathling.import.pnp.allowInternalUrls; dev default on)")
		pollInterval  = fs.Duration("poll-interval", time.Second, "pull mode: how often to poll the source without Retry-After")
		jwksFile      = fs.String("auth-jwks", "", "turn auth on: file with the issuer's public JWKS")
		issuer        = fs.String("auth-issuer", "", "with --auth-jwks: required token issuer")
		audience      = fs.String("auth-audience", "", "with --auth-jwks: required token audience")
		javaPrefix    = fs.Bool("java-error-prefix", false, "prefix validation/failure diagnostics with the Java exception class name")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		clockSkew     = fs.Duration("clock-skew", 0, "shift the emulator's clock (Date headers, transactionTime), e.g. -10m for a Pathling whose clock is behind")
		allowed       stringList
	)
	fs.Var(&allowed, "allow-export-url", "allowed export URL prefix (pathling.import.pnp.allowableExportUrls); repeatable. None: every exportUrl is refused, as in Pathling 2.x")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := pathling.ParseMode(*mode)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := pathling.Config{
		AllowableExportURLs: allowed,
		AllowInsecureURLs:   *allowInsecure,
		AllowInternalURLs:   *allowInternal,
		Mode:                m,
		PollInterval:        *pollInterval,
		JavaErrorPrefix:     *javaPrefix,
		ClockSkew:           *clockSkew,
		Logger:              logger,
		HTTPClient:          &http.Client{},
	}
	if *jwksFile != "" {
		raw, err := os.ReadFile(*jwksFile)
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		var auth pathling.AuthConfig
		if err := json.Unmarshal(raw, &auth.Keys); err != nil {
			return fmt.Errorf("auth: parse %s: %w", *jwksFile, err)
		}
		auth.Issuer, auth.Audience = *issuer, *audience
		cfg.Auth = &auth
	}
	emu, err := pathling.New(cfg)
	if err != nil {
		return err
	}
	defer emu.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           emu,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	if len(allowed) == 0 {
		logger.Warn("no --allow-export-url given: every $import-pnp will be refused, as Pathling 2.x does")
	}
	logger.Info("pathling emulator listening", "url", "http://"+ln.Addr().String()+"/fhir", "mode", m.String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("pathling emulator stopped")
	return nil
}
