package pathling

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/auth"
)

// SourceAuthConfig is Pathling's pathling.import.pnp.* client settings: how a pull job
// authenticates to the source. As in Pathling (ImportPnpExecutor), ClientID turns it on;
// PrivateKeyJWK then means SMART Backend Services (fhir-bulk-java's useSMART=true): the token
// endpoint is discovered from <exportUrl>/.well-known/smart-configuration and TokenEndpoint is
// ignored; otherwise ClientSecret is sent (HTTP Basic) to TokenEndpoint.
type SourceAuthConfig struct {
	// ClientID is pathling.import.pnp.clientId.
	ClientID string
	// PrivateKeyJWK is pathling.import.pnp.privateKeyJwk: a private JWK (RS384, or ES384).
	PrivateKeyJWK string
	// ClientSecret is pathling.import.pnp.clientSecret, used when PrivateKeyJWK is empty.
	ClientSecret string
	// TokenEndpoint is pathling.import.pnp.tokenEndpoint, used with ClientSecret only.
	TokenEndpoint string
	// Scope is pathling.import.pnp.scope, e.g. "system/*.read".
	Scope string
	// TokenExpiryTolerance is pathling.import.pnp.tokenExpiryTolerance: a cached token with
	// less left is renewed, and a token living less is refused. Zero means Pathling's 120 s.
	TokenExpiryTolerance time.Duration
}

// defaultTokenExpiryTolerance is Pathling's pathling.import.pnp.tokenExpiryTolerance default.
const defaultTokenExpiryTolerance = 120 * time.Second

func (c *SourceAuthConfig) validate() error {
	if c.ClientID == "" {
		return fmt.Errorf("%w: source auth needs a client id (pathling.import.pnp.clientId)", ErrInvalidConfig)
	}
	switch {
	case c.PrivateKeyJWK != "":
	case c.ClientSecret != "":
		if c.TokenEndpoint == "" {
			return fmt.Errorf("%w: source auth with a client secret needs pathling.import.pnp.tokenEndpoint", ErrInvalidConfig)
		}
	default:
		// Pathling's ImportPnpOperationValidator refuses every kick-off then; refusing the
		// configuration is kinder.
		return fmt.Errorf("%w: source auth needs privateKeyJwk or clientSecret", ErrInvalidConfig)
	}
	if c.TokenExpiryTolerance < 0 {
		return fmt.Errorf("%w: tokenExpiryTolerance must not be negative", ErrInvalidConfig)
	}
	return nil
}

// sourceTokens hands out one token source per export URL (SMART discovery is per source
// base), built on first use and kept, like fhir-bulk-java's access contexts.
type sourceTokens struct {
	cfg        SourceAuthConfig
	httpClient *http.Client

	mu      sync.Mutex
	sources map[string]auth.TokenSource
}

func newSourceTokens(cfg SourceAuthConfig, hc *http.Client) *sourceTokens {
	if cfg.TokenExpiryTolerance == 0 {
		cfg.TokenExpiryTolerance = defaultTokenExpiryTolerance
	}
	return &sourceTokens{cfg: cfg, httpClient: hc, sources: map[string]auth.TokenSource{}}
}

// forExport returns the token function for requests of an export from exportURL.
func (s *sourceTokens) forExport(exportURL string) (tokenFunc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := exportURL
	if s.cfg.PrivateKeyJWK == "" {
		key = "" // one token endpoint for every source
	}
	ts, ok := s.sources[key]
	if !ok {
		var err error
		if ts, err = s.newSource(exportURL); err != nil {
			return nil, err
		}
		s.sources[key] = ts
	}
	return ts.Token, nil
}

// newSource builds the token source for one export URL. It makes no request.
func (s *sourceTokens) newSource(exportURL string) (auth.TokenSource, error) {
	opts := []auth.Option{auth.WithHTTPClient(s.httpClient), auth.WithExpiryTolerance(s.cfg.TokenExpiryTolerance)}
	if s.cfg.PrivateKeyJWK != "" {
		return auth.NewSMARTBackend(auth.SMARTBackendConfig{
			ClientID: s.cfg.ClientID, Scope: s.cfg.Scope, FHIRBaseURL: strings.TrimRight(exportURL, "/"),
			PrivateJWK: []byte(s.cfg.PrivateKeyJWK),
		}, opts...)
	}
	return auth.NewClientCredentials(auth.ClientCredentialsConfig{
		ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, TokenURL: s.cfg.TokenEndpoint, Scope: s.cfg.Scope,
	}, opts...)
}

// tokenFunc yields the bearer token for a request to the source.
type tokenFunc func(ctx context.Context) (string, error)

// sourceTokenError marks a failure to obtain a token for the source.
type sourceTokenError struct{ err error }

func (e *sourceTokenError) Error() string { return "source token: " + e.err.Error() }
func (e *sourceTokenError) Unwrap() error { return e.err }

// tokenFailure words a token failure as the job's failure cause, with the token server's
// own reason (never the assertion or secret: auth errors hold neither).
func tokenFailure(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		return failure("Cannot obtain an access token for the source: " + ae.Reason())
	}
	return failure("Cannot obtain an access token for the source: " + err.Error())
}
