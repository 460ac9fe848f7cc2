// Command pathling-emulator serves the Pathling $import-pnp emulator (package
// emulators/pathling) over HTTP, for development and manual testing.
//
//	pathling-emulator --addr 127.0.0.1:8080 --mode pull --allow-export-url http://127.0.0.1:8081/fhir
//
// A secured source is pulled with Pathling's own settings, as flags or as the environment
// variables Spring Boot reads them from:
//
//	--pathling.import.pnp.clientId=pathling --pnp-private-key-jwk-file key.jwk --pathling.import.pnp.scope=system/*.read
//	PATHLING_IMPORT_PNP_CLIENTID=pathling PATHLING_IMPORT_PNP_PRIVATEKEYJWK="$(cat key.jwk)" pathling-emulator ...
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pathling-sync/pathling-sync/emulators/pathling"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
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

// pnpSettings are Pathling's pathling.import.pnp.* client settings the emulator honours: the
// flag is the property's name (Spring Boot accepts --name=value), the variable its relaxed
// binding (PATHLING_IMPORT_PNP_CLIENTID); a flag wins over the variable.
var pnpSettings = []struct{ name, usage string }{
	{"clientId", "client id at the source's token server; turns source auth on"},
	{"privateKeyJwk", "private JWK (JSON) for SMART Backend Services: token endpoint discovered from <exportUrl>/.well-known/smart-configuration, tokenEndpoint ignored"},
	{"clientSecret", "client secret (HTTP Basic to tokenEndpoint), when no privateKeyJwk; prefer the variable"},
	{"tokenEndpoint", "token endpoint, used with clientSecret only (as Pathling)"},
	{"scope", "scope to request, e.g. system/*.read"},
	{"tokenExpiryTolerance", "seconds: renew a token with less left, refuse one living less (default 120)"},
}

func pnpEnvName(setting string) string {
	return "PATHLING_IMPORT_PNP_" + strings.ToUpper(setting)
}

// run parses args (and, for the pathling.import.pnp.* settings, getenv), serves until ctx is
// done, then shuts down. ready, when set, receives the address actually bound (useful with
// port 0).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addr string)) error {
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
		pnpKeyFile    = fs.String("pnp-private-key-jwk-file", "", "emulator only: read pathling.import.pnp.privateKeyJwk from this file")
		clockSkew     = fs.Duration("clock-skew", 0, "shift the emulator's clock (Date headers, transactionTime), e.g. -10m for a Pathling whose clock is behind")
		allowed       stringList
		pnp           = map[string]*string{}
	)
	for _, p := range pnpSettings {
		pnp[p.name] = fs.String("pathling.import.pnp."+p.name, "", p.usage+" (or "+pnpEnvName(p.name)+")")
	}
	fs.Var(&allowed, "allow-export-url", "allowed export URL prefix (pathling.import.pnp.allowableExportUrls); repeatable. None: every exportUrl is refused, as in Pathling 2.x")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range pnp {
		if !set["pathling.import.pnp."+name] {
			*v = getenv(pnpEnvName(name))
		}
	}
	sourceAuth, err := sourceAuthConfig(pnp, *pnpKeyFile)
	if err != nil {
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
		SourceAuth:          sourceAuth,
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
	if sourceAuth != nil {
		method := "SMART Backend Services (token endpoint discovered from each exportUrl)"
		if sourceAuth.PrivateKeyJWK == "" {
			method = "client secret to " + sourceAuth.TokenEndpoint
		}
		logger.Info("source auth on", "clientId", sourceAuth.ClientID, "method", method, "scope", sourceAuth.Scope)
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

// sourceAuthConfig builds the source client from the pathling.import.pnp.* values; nil when
// no clientId is set (an open source, as in Pathling).
func sourceAuthConfig(pnp map[string]*string, keyFile string) (*pathling.SourceAuthConfig, error) {
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("pathling.import.pnp.privateKeyJwk: %w", err)
		}
		*pnp["privateKeyJwk"] = strings.TrimSpace(string(b))
	}
	if *pnp["clientId"] == "" {
		return nil, nil
	}
	cfg := &pathling.SourceAuthConfig{
		ClientID:      *pnp["clientId"],
		PrivateKeyJWK: *pnp["privateKeyJwk"],
		ClientSecret:  *pnp["clientSecret"],
		TokenEndpoint: *pnp["tokenEndpoint"],
		Scope:         *pnp["scope"],
	}
	if v := *pnp["tokenExpiryTolerance"]; v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 0 {
			return nil, fmt.Errorf("pathling.import.pnp.tokenExpiryTolerance: want seconds, got %q", v)
		}
		cfg.TokenExpiryTolerance = time.Duration(secs) * time.Second
	}
	return cfg, nil
}
