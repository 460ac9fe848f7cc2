package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/clients/auth"
	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/observability"
)

// This file turns the configured targets into the sync handler's: the
// wiring between config (which only reads and validates) and the handler
// and Pathling client types.

// buildTargets turns the configured targets into the handler's, each with
// its own Pathling client. They share one connection pool; each target's
// client wraps it with its own instrumentation (spans, metrics labelled with
// the target).
func buildTargets(cfg *config.Config, log *slog.Logger, tp trace.TracerProvider, m *observability.Metrics) ([]handlers.Target, error) {
	shared := sharedHTTPClient()
	names := cfg.TargetNames()
	out := make([]handlers.Target, 0, len(names))
	allowlists := allowlists{}
	for _, name := range names {
		tc, _ := cfg.Target(name)
		httpClient := &http.Client{Transport: observability.NewTransport(shared.Transport, observability.TransportConfig{
			Target: name, TracerProvider: tp, Metrics: m, ResendCount: pathling.ResendCount,
			SpanAttributes: []attribute.KeyValue{handlers.AttrTarget.String(name)},
		})}
		ts, err := tokenSource(tc, httpClient)
		if err != nil {
			return nil, fmt.Errorf("target %s: auth: %w", name, err)
		}
		style, err := exportURLStyle(tc.Pathling.ExportURLStyle)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		opts := []pathling.Option{pathling.WithHTTPClient(httpClient), pathling.WithRequestTimeout(tc.Pathling.RequestTimeout),
			pathling.WithExportURLStyle(style)}
		if ts != nil {
			opts = append(opts, pathling.WithTokenSource(ts))
		}
		client, err := pathling.New(tc.Pathling.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		t := handlerTarget(tc, pathling.NewPort(client))
		t.AllowedExportURLs = allowlists.share(t.AllowedExportURLs)
		out = append(out, t)
		log.Debug("target configured", "target", name, "pathling", tc.Pathling.URL, "auth", tc.Pathling.Auth.Type)
	}
	return out, nil
}

// allowlists holds the targets' allowlists by their URLs, so that targets
// with the same allowed export URLs (many targets syncing from one source)
// share one read-only slice and its strings rather than each holding its
// own copy (10,000 targets: ~0.6 MB).
type allowlists map[string][]string

// share returns the list equal to urls that a is keeping, or keeps urls
// (its capacity clipped: an append never writes into a shared array).
func (a allowlists) share(urls []string) []string {
	if len(urls) == 0 {
		return urls
	}
	key := strings.Join(urls, "\n") // URLs hold no newline
	if kept, ok := a[key]; ok {
		return kept
	}
	urls = slices.Clip(urls)
	a[key] = urls
	return urls
}

// The shared connection pool's policy, for one target or 10,000. A target
// is one Pathling, with at most one sync (and so about one request) at a
// time: a host sees many requests at once only when several targets share
// it (a proxy, or the bench's stand-in).
const (
	// maxConnsPerHost bounds the connections to one host; further requests
	// wait for one under their own timeout. Without it, 10,000 syncs
	// kicking off at once against one host opened 10,000 connections, each
	// with two goroutines and 8 kB of buffers, and the process kept that
	// peak as RSS long after.
	maxConnsPerHost = 64
	// maxIdleConns bounds the idle connections kept in all (~30 kB each).
	// They serve the requests of a sync that follow each other closely
	// (kick-off, first poll, DELETE) and hosts that targets share; keeping
	// one per target across the 5–60 s between polls of 10,000 targets
	// would take ~300 MB.
	maxIdleConns = 512
	// idleConnTimeout is how long an idle connection is kept: longer than
	// the 60 s cap of the default poll cadence, so a target's next poll
	// finds its connection while the pool has room.
	idleConnTimeout = 90 * time.Second
)

func sharedHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = maxConnsPerHost
	tr.MaxIdleConnsPerHost = maxConnsPerHost
	tr.MaxIdleConns = maxIdleConns
	tr.IdleConnTimeout = idleConnTimeout
	// No overall Timeout here: every request carries its own deadline.
	return &http.Client{Transport: tr}
}

func tokenSource(tc config.TargetConfig, hc *http.Client) (auth.TokenSource, error) {
	a := tc.Pathling.Auth
	switch a.Type {
	case "", config.AuthNone:
		return nil, nil
	case config.AuthBearer:
		tok := a.Token.Reveal()
		if a.TokenFile != "" {
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("token file: %w", err)
			}
			tok = strings.TrimSpace(string(b))
		}
		return auth.Static(tok), nil
	case config.AuthClientCredentials:
		return auth.NewClientCredentials(auth.ClientCredentialsConfig{
			TokenURL: a.TokenURL, ClientID: a.ClientID, ClientSecret: a.ClientSecret.Reveal(), Scope: a.Scope,
		}, auth.WithHTTPClient(hc))
	case config.AuthSMARTBackend:
		key := []byte(a.PrivateKey.Reveal())
		if a.PrivateKeyFile != "" {
			b, err := os.ReadFile(a.PrivateKeyFile)
			if err != nil {
				return nil, fmt.Errorf("private key file: %w", err)
			}
			key = b
		}
		return auth.NewSMARTBackend(auth.SMARTBackendConfig{
			ClientID: a.ClientID, Scope: a.Scope, TokenURL: a.TokenURL, FHIRBaseURL: tc.Pathling.URL,
			PrivateJWK: key, Alg: a.Alg, KeyID: a.KID,
		}, auth.WithHTTPClient(hc))
	}
	return nil, fmt.Errorf("unknown auth type %q", a.Type)
}

// exportURLStyle returns the Pathling client's export URL style for the
// configured one (config validates it; "" is the default, base).
func exportURLStyle(s string) (pathling.ExportURLStyle, error) {
	switch s {
	case config.ExportURLBase, "":
		return pathling.ExportURLBase, nil
	case config.ExportURLEndpoint:
		return pathling.ExportURLEndpoint, nil
	}
	return 0, fmt.Errorf("export URL style %q is not %s or %s", s, config.ExportURLBase, config.ExportURLEndpoint)
}

// handlerTarget returns tc as the sync handler takes it, driving p (the
// Pathling client built from tc.Pathling). The allowlist is tc's allowed
// export URLs plus its default export URL, normalised by p for the target's
// export URL style, without duplicates; URLs p refuses are left out
// (config's validation rejects them first).
func handlerTarget(tc config.TargetConfig, p handlers.Pathling) handlers.Target {
	var allowed []string
	for _, raw := range append(slices.Clone(tc.AllowedExportURLs), tc.Defaults.ExportURL) {
		if raw == "" {
			continue
		}
		if u, err := p.NormalizeExportURL(raw); err == nil && !slices.Contains(allowed, u) {
			allowed = append(allowed, u)
		}
	}
	return handlers.Target{
		Name:              tc.Name,
		Pathling:          p,
		AllowedExportURLs: allowed,
		Defaults:          tc.Defaults.Request(),
		Timeout:           tc.Timeout,
		Overlap:           tc.Overlap,
		Poll:              handlerBackoff(tc.Poll.BackoffConfig),
		PollPolicy:        tc.Poll.Policy,
		PollFloor:         tc.Poll.Floor,
		Retry:             handlerBackoff(tc.Retry),
		MaxJobLosses:      tc.MaxJobLosses,
		KeepJobs:          tc.KeepJobs,
	}
}

// handlerBackoff returns a configured cadence as the handler's type.
func handlerBackoff(b config.BackoffConfig) handlers.Backoff {
	return handlers.Backoff{Initial: b.Initial, Factor: b.Factor, Max: b.Max, Jitter: b.Jitter}
}
