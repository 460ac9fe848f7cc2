package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// SMARTBackendConfig configures SMART Backend Services authorization: the
// client credentials grant with a JWT assertion signed by the client's
// private key (private_key_jwt, RFC 7523).
type SMARTBackendConfig struct {
	ClientID string
	// Scope is sent when not empty, e.g. "system/*.read".
	Scope string
	// TokenURL is the token endpoint. When empty it is discovered from
	// FHIRBaseURL + "/.well-known/smart-configuration" on first use.
	TokenURL string
	// FHIRBaseURL is used for discovery when TokenURL is empty.
	FHIRBaseURL string
	// PrivateJWK is a JWK (JSON) holding an RSA (>= 2048 bits) or EC P-384
	// private key.
	PrivateJWK []byte
	// Alg is "RS384" or "ES384"; by default RS384 for an RSA key and ES384
	// for an EC key.
	Alg string
	// KeyID is the assertion's kid header; by default the JWK's kid. One of
	// them is required: the server picks the verification key by it.
	KeyID string
}

// assertionLifetime is how far ahead a client assertion expires. SMART allows
// at most five minutes; one is kept in hand for clock skew.
const assertionLifetime = 4 * time.Minute

// clientAssertionType is the client_assertion_type of RFC 7523 §2.2.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// NewSMARTBackend returns a caching TokenSource for SMART Backend Services.
// It fails (ErrInvalidConfig, ErrInvalidOption) on an unusable key or config;
// it makes no request. Token returns *Error when discovery or the token
// endpoint fails.
func NewSMARTBackend(cfg SMARTBackendConfig, opts ...Option) (TokenSource, error) {
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("%w: SMART backend: ClientID is required", ErrInvalidConfig)
	}
	var discoveryURL string
	switch {
	case cfg.TokenURL != "":
		if _, err := checkEndpointURL("TokenURL", cfg.TokenURL); err != nil {
			return nil, fmt.Errorf("SMART backend: %w", err)
		}
	case cfg.FHIRBaseURL != "":
		if _, err := checkEndpointURL("FHIRBaseURL", cfg.FHIRBaseURL); err != nil {
			return nil, fmt.Errorf("SMART backend: %w", err)
		}
		discoveryURL = strings.TrimRight(cfg.FHIRBaseURL, "/") + "/.well-known/smart-configuration"
	default:
		return nil, fmt.Errorf("%w: SMART backend: TokenURL or FHIRBaseURL is required", ErrInvalidConfig)
	}
	signer, err := newAssertionSigner(cfg)
	if err != nil {
		return nil, fmt.Errorf("SMART backend: %w", err)
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	s := &smartBackend{cfg: cfg, opts: o, signer: signer, discoveryURL: discoveryURL, tokenURL: cfg.TokenURL}
	return newCachingSource(s.fetch, o), nil
}

type smartBackend struct {
	cfg          SMARTBackendConfig
	opts         options
	signer       jose.Signer
	discoveryURL string

	mu       sync.Mutex
	tokenURL string // discovered once, then kept
}

func (s *smartBackend) fetch(ctx context.Context) (token, error) {
	tokenURL, err := s.endpoint(ctx)
	if err != nil {
		return token{}, err
	}
	now := s.opts.now()
	assertion, err := jwt.Signed(s.signer).Claims(jwt.Claims{
		Issuer:   s.cfg.ClientID,
		Subject:  s.cfg.ClientID,
		Audience: jwt.Audience{tokenURL},
		ID:       s.opts.newJTI(),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(assertionLifetime)),
	}).Serialize()
	if err != nil {
		return token{}, &Error{Op: "token", Err: errors.New("cannot sign client assertion")}
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	}
	if s.cfg.Scope != "" {
		form.Set("scope", s.cfg.Scope)
	}
	return requestToken(ctx, s.opts.httpClient, s.opts.now, tokenRequest{
		url: tokenURL, form: form, secrets: []string{assertion},
	})
}

// endpoint returns the token URL, discovering it on first use.
func (s *smartBackend) endpoint(ctx context.Context) (string, error) {
	s.mu.Lock()
	known := s.tokenURL
	s.mu.Unlock()
	if known != "" {
		return known, nil
	}
	discovered, err := discoverTokenEndpoint(ctx, s.opts.httpClient, s.discoveryURL)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.tokenURL = discovered
	s.mu.Unlock()
	return discovered, nil
}

// discoverTokenEndpoint reads token_endpoint from a SMART configuration
// document. Errors are *Error with Op "discovery".
func discoverTokenEndpoint(ctx context.Context, hc *http.Client, discoveryURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, discoveryURL, nil)
	if err != nil {
		return "", &Error{Op: "discovery", Err: errors.New("cannot build request")}
	}
	req.Header.Set("Accept", "application/json")
	status, body, err := roundTrip(hc, req)
	if err != nil {
		return "", &Error{Op: "discovery", Retryable: true, Err: err}
	}
	if status != http.StatusOK {
		return "", endpointError("discovery", status, body, nil)
	}
	var doc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", &Error{Op: "discovery", Status: status, Err: errors.New("malformed smart-configuration")}
	}
	if doc.TokenEndpoint == "" {
		return "", &Error{Op: "discovery", Status: status, Err: errors.New("smart-configuration has no token_endpoint")}
	}
	if _, err := checkEndpointURL("token_endpoint", doc.TokenEndpoint); err != nil {
		return "", &Error{Op: "discovery", Status: status, Err: err}
	}
	return doc.TokenEndpoint, nil
}

// newAssertionSigner parses the private JWK and makes a signer for the
// configured (or implied) algorithm that stamps the kid header.
func newAssertionSigner(cfg SMARTBackendConfig) (jose.Signer, error) {
	if len(cfg.PrivateJWK) == 0 {
		return nil, fmt.Errorf("%w: PrivateJWK is required", ErrInvalidConfig)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(cfg.PrivateJWK); err != nil {
		// The parse error could quote key material: leave it out.
		return nil, fmt.Errorf("%w: PrivateJWK is not a valid JWK", ErrInvalidConfig)
	}
	if jwk.IsPublic() || !jwk.Valid() {
		return nil, fmt.Errorf("%w: PrivateJWK must hold a private key", ErrInvalidConfig)
	}
	kid := cfg.KeyID
	if kid == "" {
		kid = jwk.KeyID
	}
	if kid == "" {
		return nil, fmt.Errorf("%w: KeyID is required when the JWK has no kid", ErrInvalidConfig)
	}

	var implied jose.SignatureAlgorithm
	switch k := jwk.Key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key must have at least 2048 bits", ErrInvalidConfig)
		}
		implied = jose.RS384
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: EC key must be on curve P-384", ErrInvalidConfig)
		}
		implied = jose.ES384
	default:
		return nil, fmt.Errorf("%w: PrivateJWK must be an RSA or EC P-384 key", ErrInvalidConfig)
	}
	alg := implied
	if cfg.Alg != "" {
		alg = jose.SignatureAlgorithm(cfg.Alg)
		if alg != jose.RS384 && alg != jose.ES384 {
			return nil, fmt.Errorf("%w: Alg must be RS384 or ES384, got %q", ErrInvalidConfig, cfg.Alg)
		}
		if alg != implied {
			return nil, fmt.Errorf("%w: Alg %s does not fit the key type", ErrInvalidConfig, alg)
		}
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: jwk.Key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot make a %s signer", ErrInvalidConfig, alg)
	}
	return signer, nil
}
