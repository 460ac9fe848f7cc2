package pathling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// ErrInvalidConfig is returned by New for a configuration it cannot run with.
var ErrInvalidConfig = errors.New("pathling emulator: invalid config")

// Mode selects how jobs run.
type Mode int

const (
	// ModePull runs jobs the way Pathling does: export from the source, poll, download the
	// NDJSON files and apply the save mode to the in-memory store.
	ModePull Mode = iota
	// ModeScripted runs jobs without contacting any source; the control API decides how each
	// job behaves (see Script).
	ModeScripted
)

// String returns the flag spelling of the mode.
func (m Mode) String() string {
	switch m {
	case ModePull:
		return "pull"
	case ModeScripted:
		return "scripted"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// ParseMode parses "pull" or "scripted".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pull", "":
		return ModePull, nil
	case "scripted":
		return ModeScripted, nil
	default:
		return 0, fmt.Errorf("%w: unknown mode %q (want pull or scripted)", ErrInvalidConfig, s)
	}
}

// AuthConfig turns on Pathling's bearer-token authentication (pathling.auth.enabled=true).
// Tokens must be RS256 JWTs signed by one of Keys, with the configured issuer and audience;
// authorities come from the claim "authorities".
type AuthConfig struct {
	// Issuer is the required "iss" claim. Required.
	Issuer string
	// Audience, when set, must appear in the "aud" claim.
	Audience string
	// Keys holds the issuer's public keys (its JWKS). Required.
	Keys jose.JSONWebKeySet
	// Leeway is the clock skew allowed on exp/nbf; zero means Spring Security's default, 60 s.
	Leeway time.Duration
}

// Config configures an Emulator. The zero value is a pull-mode Pathling 2.x that rejects every
// export URL (its allowlist is empty), with auth off.
type Config struct {
	// AllowableExportURLs is pathling.import.pnp.allowableExportUrls. Empty rejects every
	// exportUrl, as Pathling 2.x does.
	AllowableExportURLs []string
	// AllowInsecureURLs is pathling.allowInsecureUrls: accept plain http:// export URLs.
	AllowInsecureURLs bool
	// AllowInternalURLs is pathling.import.pnp.allowInternalUrls: accept export URLs whose
	// host resolves to a loopback, private or link-local address.
	AllowInternalURLs bool
	// Mode is ModePull (default) or ModeScripted.
	Mode Mode
	// Auth turns on authentication when non-nil.
	Auth *AuthConfig
	// HTTPClient makes the pull-mode requests to the source. Nil means a fresh http.Client.
	HTTPClient *http.Client
	// SourceToken, when set, supplies a bearer token for every request to the source.
	SourceToken func(ctx context.Context) (string, error)
	// SourceAuth, when set, is Pathling's pathling.import.pnp.* client: pull jobs obtain the
	// source's bearer token from its token server (SMART Backend Services with a private JWK,
	// or a client secret). Not together with SourceToken.
	SourceAuth *SourceAuthConfig
	// Clock is the emulator's clock (Date headers, transactionTime, write times). Nil means
	// time.Now.
	Clock func() time.Time
	// ClockSkew shifts Clock: a Pathling whose clock is off (negative: behind). Tests of
	// clock-skew handling set it.
	ClockSkew time.Duration
	// PollInterval is how often a pull job polls the source when it sends no Retry-After
	// (fhir-bulk-java's minPoolingDelay: 1 s, the default). It is also the floor for
	// Retry-After; the delay after a 429 is 10×, after a transient error 2×, as in
	// fhir-bulk-java's defaults. Tests lower it.
	PollInterval time.Duration
	// ImportHook, when set, is called by a pull job when it enters its import phase, while
	// its polls show X-Progress; the job waits for it. An error fails the job with that
	// message. Meant for tests that need to observe the import phase.
	ImportHook func(ctx context.Context, jobID string) error
	// JavaErrorPrefix prefixes the diagnostics of Pathling's InvalidUserInputError (kick-off
	// validation errors and job failures) with "au.csiro.pathling.errors.InvalidUserInputError: ",
	// as HAPI versions that build the message with Throwable.toString() do. Off by default:
	// current HAPI uses the bare message. Lets client tests cover both shapes.
	JavaErrorPrefix bool
	// Logger receives the emulator's logs. Nil discards them.
	Logger *slog.Logger
}

const (
	defaultPollInterval = time.Second
	maxPollDelay        = 60 * time.Second
	defaultLeeway       = 60 * time.Second
	// Deadlines for requests to the source: the status/kick-off/delete calls are small,
	// downloads may be large.
	sourceRequestTimeout  = 60 * time.Second
	sourceDownloadTimeout = 10 * time.Minute
	maxConcurrentFetches  = 10
	maxTransientErrors    = 3
)

func (c *Config) setDefaults() {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.ClockSkew != 0 {
		clock, skew := c.Clock, c.ClockSkew
		c.Clock = func() time.Time { return clock().Add(skew) }
	}
	if c.PollInterval <= 0 {
		c.PollInterval = defaultPollInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Auth != nil && c.Auth.Leeway == 0 {
		c.Auth.Leeway = defaultLeeway
	}
}

func (c *Config) validate() error {
	if c.Mode != ModePull && c.Mode != ModeScripted {
		return fmt.Errorf("%w: unknown mode %d", ErrInvalidConfig, c.Mode)
	}
	if c.SourceAuth != nil {
		if c.SourceToken != nil {
			return fmt.Errorf("%w: SourceToken and SourceAuth are exclusive", ErrInvalidConfig)
		}
		if err := c.SourceAuth.validate(); err != nil {
			return err
		}
	}
	if c.Auth != nil {
		if c.Auth.Issuer == "" {
			return fmt.Errorf("%w: auth needs an issuer", ErrInvalidConfig)
		}
		if len(c.Auth.Keys.Keys) == 0 {
			return fmt.Errorf("%w: auth needs at least one public key", ErrInvalidConfig)
		}
	}
	return nil
}
