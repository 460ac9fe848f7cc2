package source

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	tokenPath = "/auth/token"
	// jwtBearerAssertion is the only client_assertion_type SMART Backend Services uses.
	jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// maxAssertionLifetime: SMART requires exp to be no more than five minutes in the future.
	maxAssertionLifetime = 5 * time.Minute
	// clockSkew is tolerated between the client's clock and ours on exp, nbf and iat.
	clockSkew = 30 * time.Second
	// DefaultTokenLifetime is the lifetime of issued access tokens.
	DefaultTokenLifetime = 5 * time.Minute
)

// assertionAlgorithms are the signing algorithms SMART Backend Services requires servers to
// support.
var assertionAlgorithms = []jose.SignatureAlgorithm{jose.RS384, jose.ES384}

// AuthConfig turns on SMART Backend Services authentication.
type AuthConfig struct {
	// Clients maps each registered client_id to its public keys (private keys are accepted and
	// reduced to their public part). Keys may carry a kid, matched against the assertion's.
	Clients map[string]jose.JSONWebKeySet
	// TokenLifetime is the lifetime of issued access tokens. Default 5 minutes.
	TokenLifetime time.Duration
}

// authState holds the registered clients and what has been issued. Its maps are guarded by
// Server.mu.
type authState struct {
	clients  map[string][]jose.JSONWebKey
	lifetime time.Duration
	tokens   map[string]*accessToken
	jtis     map[string]time.Time // client id + "\x00" + jti -> when it may be forgotten
}

type accessToken struct {
	principal
	expires time.Time
}

// principal is an authenticated client and what its token allows.
type principal struct {
	clientID string
	scopes   []string // resource types, or "*"
}

// permits reports whether the token's scopes allow reading typ.
func (p *principal) permits(typ string) bool {
	for _, s := range p.scopes {
		if s == "*" || s == typ {
			return true
		}
	}
	return false
}

func newAuthState(cfg AuthConfig) (*authState, error) {
	a := &authState{
		clients:  map[string][]jose.JSONWebKey{},
		lifetime: cfg.TokenLifetime,
		tokens:   map[string]*accessToken{},
		jtis:     map[string]time.Time{},
	}
	if a.lifetime <= 0 {
		a.lifetime = DefaultTokenLifetime
	}
	if len(cfg.Clients) == 0 {
		return nil, fmt.Errorf("%w: Auth needs at least one client", ErrInvalidConfig)
	}
	for id, set := range cfg.Clients {
		if id == "" {
			return nil, fmt.Errorf("%w: empty client id", ErrInvalidConfig)
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("%w: client %q has no keys", ErrInvalidConfig, id)
		}
		for i, k := range set.Keys {
			pub := k.Public()
			if !pub.Valid() {
				return nil, fmt.Errorf("%w: client %q key %d is not a usable public key", ErrInvalidConfig, id, i)
			}
			a.clients[id] = append(a.clients[id], pub)
		}
	}
	return a, nil
}

// smartConfiguration is the discovery document of SMART App Launch / Backend Services.
type smartConfiguration struct {
	TokenEndpoint                     string   `json:"token_endpoint"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs      []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	ScopesSupported                   []string `json:"scopes_supported"`
	Capabilities                      []string `json:"capabilities"`
}

func (s *Server) handleSmartConfiguration(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		writeOutcome(w, http.StatusNotFound, "error", "not-found", "this server does not use SMART authorization")
		return
	}
	writeJSON(w, http.StatusOK, "application/json", smartConfiguration{
		TokenEndpoint:                     s.origin(r) + tokenPath,
		TokenEndpointAuthMethodsSupported: []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgs:      []string{"RS384", "ES384"},
		GrantTypesSupported:               []string{"client_credentials"},
		ScopesSupported:                   []string{"system/*.read", "system/*.rs"},
		Capabilities:                      []string{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
	})
}

// tokenError is an OAuth 2.0 error response (RFC 6749 §5.2), always with status 400.
type tokenError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func (e *tokenError) Error() string { return e.Code + ": " + e.Description }

func oauthError(code, format string, args ...any) *tokenError {
	return &tokenError{Code: code, Description: fmt.Sprintf(format, args...)}
}

// handleToken is the token endpoint: client_credentials with a private_key_jwt assertion.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if s.auth == nil {
		writeJSON(w, http.StatusNotFound, "application/json", oauthError("invalid_request", "this server does not issue tokens"))
		return
	}
	resp, err := s.issueToken(w, r)
	if err != nil {
		var te *tokenError
		if !errors.As(err, &te) {
			te = oauthError("invalid_request", "%v", err)
		}
		s.mu.Lock()
		s.counters.TokensRejected++
		s.mu.Unlock()
		s.log.Info("token request rejected", "error", te.Code, "reason", te.Description)
		writeJSON(w, http.StatusBadRequest, "application/json", te)
		return
	}
	writeJSON(w, http.StatusOK, "application/json", resp)
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) (*tokenResponse, error) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, oauthError("invalid_request", "the token request must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, oauthError("invalid_request", "unreadable form: %v", err)
	}
	form := r.PostForm
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		return nil, oauthError("unsupported_grant_type", "grant_type must be client_credentials, got %q", gt)
	}
	if at := form.Get("client_assertion_type"); at != jwtBearerAssertion {
		return nil, oauthError("invalid_client", "client_assertion_type must be %s", jwtBearerAssertion)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" {
		return nil, oauthError("invalid_client", "missing client_assertion")
	}
	tokenURL := s.origin(r) + tokenPath
	clientID, err := s.verifyAssertion(assertion, tokenURL)
	if err != nil {
		return nil, err
	}
	scopes, granted, err := parseScopes(form.Get("scope"))
	if err != nil {
		return nil, err
	}

	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generating a token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	s.mu.Lock()
	now := s.now()
	for t, at := range s.auth.tokens {
		if !now.Before(at.expires) {
			delete(s.auth.tokens, t)
		}
	}
	s.auth.tokens[token] = &accessToken{principal: principal{clientID: clientID, scopes: scopes}, expires: now.Add(s.auth.lifetime)}
	s.counters.TokensIssued++
	s.mu.Unlock()
	s.log.Info("token issued", "client", clientID, "scope", granted)
	return &tokenResponse{
		AccessToken: token, TokenType: "bearer", ExpiresIn: int64(s.auth.lifetime / time.Second), Scope: granted,
	}, nil
}

// verifyAssertion checks a client assertion per SMART Backend Services and returns the client
// id: a JWS (RS384 or ES384) signed by a registered key of the client, iss = sub = client id,
// aud = the token endpoint URL, exp present, not past and at most 5 minutes ahead, jti unused.
func (s *Server) verifyAssertion(assertion, tokenURL string) (string, error) {
	tok, err := jwt.ParseSigned(assertion, assertionAlgorithms)
	if err != nil {
		return "", oauthError("invalid_client", "client_assertion is not a JWT signed with RS384 or ES384")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", oauthError("invalid_client", "client_assertion claims are unreadable")
	}
	clientID := unverified.Issuer
	s.mu.Lock()
	keys := s.auth.clients[clientID]
	s.mu.Unlock()
	if len(keys) == 0 {
		return "", oauthError("invalid_client", "unknown client %q", clientID)
	}
	kid := tok.Headers[0].KeyID
	var claims jwt.Claims
	var verified bool
	for _, k := range keys {
		if kid != "" && k.KeyID != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != tok.Headers[0].Algorithm {
			continue
		}
		if err := tok.Claims(k.Key, &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", oauthError("invalid_client", "client_assertion signature does not match a registered key of client %q", clientID)
	}
	now := s.now()
	if claims.Subject != clientID {
		return "", oauthError("invalid_client", "client_assertion sub must equal iss")
	}
	if !claims.Audience.Contains(tokenURL) {
		return "", oauthError("invalid_client", "client_assertion aud must be %s", tokenURL)
	}
	if claims.Expiry == nil {
		return "", oauthError("invalid_client", "client_assertion has no exp")
	}
	if claims.Expiry.Time().After(now.Add(maxAssertionLifetime + clockSkew)) {
		return "", oauthError("invalid_client", "client_assertion exp is more than 5 minutes in the future")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Time: now}, clockSkew); err != nil {
		return "", oauthError("invalid_client", "client_assertion is not valid now: %v", err)
	}
	if claims.ID == "" {
		return "", oauthError("invalid_client", "client_assertion has no jti")
	}
	key := clientID + "\x00" + claims.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, until := range s.auth.jtis {
		if now.After(until) {
			delete(s.auth.jtis, k)
		}
	}
	if _, seen := s.auth.jtis[key]; seen {
		return "", oauthError("invalid_client", "client_assertion jti was already used")
	}
	// Remember the jti for as long as the assertion could still be accepted.
	s.auth.jtis[key] = claims.Expiry.Time().Add(clockSkew)
	return clientID, nil
}

var scopePattern = regexp.MustCompile(`^system/(\*|[A-Z][A-Za-z]+)\.(read|\*|[cruds]+)$`)

// parseScopes keeps the requested scopes that grant reading (SMART v1 "read" or "*", v2
// letters including "r"); other scopes are not granted. No readable scope is invalid_scope.
func parseScopes(requested string) (types []string, granted string, err error) {
	var kept []string
	for _, sc := range strings.Fields(requested) {
		m := scopePattern.FindStringSubmatch(sc)
		if m == nil {
			continue
		}
		if m[1] != "*" && !r4ResourceTypes[m[1]] {
			continue
		}
		if perm := m[2]; perm != "read" && perm != "*" && !strings.Contains(perm, "r") {
			continue
		}
		kept = append(kept, sc)
		types = append(types, m[1])
	}
	if len(kept) == 0 {
		return nil, "", oauthError("invalid_scope", "request at least one system-level read scope, e.g. system/*.read")
	}
	return types, strings.Join(kept, " "), nil
}

// authenticate checks the bearer token of a FHIR request when auth is on. It returns the
// principal (nil when the server is open) or writes 401 and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*principal, bool) {
	if s.auth == nil {
		return nil, true
	}
	reject := func(reason string) (*principal, bool) {
		s.mu.Lock()
		s.counters.Unauthorized++
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer realm="fhir", error="invalid_token"`)
		writeOutcome(w, http.StatusUnauthorized, "error", "login", reason)
		return nil, false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return reject("a bearer access token is required")
	}
	s.mu.Lock()
	at := s.auth.tokens[strings.TrimSpace(token)]
	now := s.now()
	s.mu.Unlock()
	if at == nil {
		return reject("unknown access token")
	}
	if !now.Before(at.expires) {
		return reject("expired access token")
	}
	p := at.principal
	return &p, true
}
