package auth

import (
	"bufio"
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// The tests in this file run against a real OAuth 2.0 server, oidc-provider
// (testdata/oidc), started with node. `npm ci --prefix clients/auth/testdata/oidc`
// installs it; without it they skip, except under CI=true where they fail.
// OIDC_DEBUG=1 prints the provider's log (why it refused what) after the test.

const oidcDir = "testdata/oidc"

// oidcServer is a running oidc-provider.
type oidcServer struct {
	issuer   string
	tokenURL string
}

func requireOIDCProvider(t *testing.T) string {
	t.Helper()
	missing := func(format string, args ...any) {
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found: %v", err)
	}
	if _, err := os.Stat(filepath.Join(oidcDir, "node_modules", "oidc-provider", "package.json")); err != nil {
		missing("oidc-provider not installed (run: npm ci --prefix clients/auth/testdata/oidc): %v", err)
	}
	return node
}

// startOIDC starts oidc-provider with the given config (see server.js) and
// waits until its discovery document is served.
func startOIDC(t *testing.T, config map[string]any) *oidcServer {
	t.Helper()
	node := requireOIDCProvider(t)

	cfgPath := filepath.Join(t.TempDir(), "oidc-config.json")
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "server.js", "--port", "0", "--config", cfgPath)
	cmd.Dir = oidcDir
	stderr := &testenv.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if issuer, ok := strings.CutPrefix(sc.Text(), "oidc-provider ready "); ok {
				ready <- strings.TrimSpace(issuer)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() || os.Getenv("OIDC_DEBUG") != "" {
			t.Logf("oidc-provider stderr:\n%s", stderr.String())
		}
	})

	var issuer string
	select {
	case issuer = <-ready:
	case <-exited:
		t.Fatalf("oidc-provider exited before it was ready:\n%s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("oidc-provider not ready within 30s:\n%s", stderr.String())
	}

	var discovery struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	eventually(t, 15*time.Second, func() bool {
		reqCtx, reqCancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer reqCancel()
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, issuer+"/.well-known/openid-configuration", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&discovery) == nil
	})
	if discovery.TokenEndpoint == "" {
		t.Fatal("discovery document has no token_endpoint")
	}
	return &oidcServer{issuer: issuer, tokenURL: discovery.TokenEndpoint}
}

// tokenClaims decodes an access token (a JWT from this provider) without
// verifying it: the point is which client it was issued to.
func tokenClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("access token is not a JWT: %v", err)
	}
	claims := map[string]any{}
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestOIDCProvider(t *testing.T) {
	const (
		secretClient = "secret-client"
		secret       = "correct-horse-battery-staple-42"
		rsClient     = "rs384-client"
		esClient     = "es384-client"
		scope        = "system/*.read"
		ttlSeconds   = 60
	)
	requireOIDCProvider(t)
	rsKey := newRSAKey(t)
	esKey := newECKey(t, elliptic.P384())
	wrongKey := newRSAKey(t)

	rsPub := json.RawMessage(jwkJSON(t, &rsKey.PublicKey, "rs-1", "RS384"))
	esPub := json.RawMessage(jwkJSON(t, &esKey.PublicKey, "es-1", "ES384"))
	rsPriv := jwkJSON(t, rsKey, "rs-1", "RS384")
	esPriv := jwkJSON(t, esKey, "es-1", "ES384")
	wrongPriv := jwkJSON(t, wrongKey, "rs-1", "RS384") // same kid, different key

	machine := func(m map[string]any) map[string]any {
		m["grant_types"] = []string{"client_credentials"}
		m["response_types"] = []string{}
		m["redirect_uris"] = []string{}
		return m
	}
	srv := startOIDC(t, map[string]any{
		"scope":          scope,
		"knownScopes":    []string{"user/*.write", "system/*.write"},
		"accessTokenTTL": ttlSeconds,
		"clients": []any{
			machine(map[string]any{
				"client_id": secretClient, "client_secret": secret,
				"token_endpoint_auth_method": "client_secret_basic",
			}),
			machine(map[string]any{
				"client_id": rsClient, "token_endpoint_auth_method": "private_key_jwt",
				"token_endpoint_auth_signing_alg": "RS384",
				"scope":                           scope, // what it may ask for: more is invalid_scope
				"jwks":                            map[string]any{"keys": []any{rsPub}},
			}),
			machine(map[string]any{
				"client_id": esClient, "token_endpoint_auth_method": "private_key_jwt",
				"token_endpoint_auth_signing_alg": "ES384",
				"jwks":                            map[string]any{"keys": []any{esPub}},
			}),
		},
	})

	ctx := context.Background()

	assertRejected := func(t *testing.T, err error, leaks ...string) {
		t.Helper()
		var ae *Error
		if !errors.As(err, &ae) {
			t.Fatalf("want *auth.Error, got %T %v", err, err)
		}
		if ae.Status != http.StatusUnauthorized && ae.Status != http.StatusBadRequest {
			t.Errorf("status = %d, want 400 or 401", ae.Status)
		}
		if ae.Code != "invalid_client" {
			t.Errorf("code = %q, want invalid_client", ae.Code)
		}
		if ae.Retryable {
			t.Error("a rejected client must not be retryable")
		}
		for _, leak := range append(leaks, "eyJ") {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("error text leaks a secret or assertion: %q", err.Error())
			}
		}
	}

	t.Run("client secret basic", func(t *testing.T) {
		ts, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: secret, TokenURL: srv.tokenURL, Scope: scope,
		})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		claims := tokenClaims(t, tok)
		if claims["client_id"] != secretClient || claims["scope"] != scope {
			t.Errorf("claims = %v, want client_id %s and scope %s", claims, secretClient, scope)
		}
	})

	t.Run("wrong secret is rejected", func(t *testing.T) {
		wrong := "not-the-secret-" + secret
		ts, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: wrong, TokenURL: srv.tokenURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.Token(ctx)
		assertRejected(t, err, wrong)
		var ae *Error
		if errors.As(err, &ae) && ae.Status != http.StatusUnauthorized {
			t.Errorf("status = %d, want 401", ae.Status)
		}
	})

	for _, tc := range []struct {
		name, client string
		key          []byte
		wantAlg      string
	}{
		{"RS384", rsClient, rsPriv, "RS384"},
		{"ES384", esClient, esPriv, "ES384"},
	} {
		t.Run("SMART backend "+tc.name, func(t *testing.T) {
			ts, err := NewSMARTBackend(SMARTBackendConfig{
				ClientID: tc.client, Scope: scope, TokenURL: srv.tokenURL, PrivateJWK: tc.key,
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := ts.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if claims := tokenClaims(t, tok); claims["client_id"] != tc.client {
				t.Errorf("client_id = %v, want %s", claims["client_id"], tc.client)
			}
		})
	}

	t.Run("assertion signed with a wrong key is rejected", func(t *testing.T) {
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: rsClient, TokenURL: srv.tokenURL, PrivateJWK: wrongPriv,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.Token(ctx)
		assertRejected(t, err)
	})

	// The server's refusal reaches the operator: code and description, in
	// Reason (what the SyncFailed message and the log show), never the
	// assertion.
	assertReason := func(t *testing.T, err error, code string) {
		t.Helper()
		var ae *Error
		if !errors.As(err, &ae) {
			t.Fatalf("want *auth.Error, got %T %v", err, err)
		}
		if ae.Code != code || ae.Description == "" || ae.Retryable {
			t.Errorf("code %q description %q retryable %v, want %s with a description, not retryable", ae.Code, ae.Description, ae.Retryable, code)
		}
		want := "token server refused: " + code + ": " + ae.Description
		if got := ae.Reason(); !strings.HasPrefix(got, want) {
			t.Errorf("Reason() = %q, want it to start with %q", got, want)
		}
		if strings.Contains(ae.Reason(), "eyJ") || strings.Contains(err.Error(), "eyJ") {
			t.Errorf("error leaks the assertion: %q", ae.Reason())
		}
	}

	t.Run("scope the server does not grant is refused with invalid_scope", func(t *testing.T) {
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: rsClient, TokenURL: srv.tokenURL, PrivateJWK: rsPriv, Scope: "user/*.write",
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.Token(ctx)
		assertReason(t, err, "invalid_scope")
	})

	t.Run("assertion with an unknown kid is refused with the reason", func(t *testing.T) {
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: rsClient, TokenURL: srv.tokenURL, PrivateJWK: rsPriv, KeyID: "rotated-away",
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.Token(ctx)
		assertReason(t, err, "invalid_client")
		t.Logf("unknown kid: %s", err)
	})

	t.Run("reused jti is rejected", func(t *testing.T) {
		jti := fmt.Sprintf("replayed-%d", time.Now().UnixNano())
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: rsClient, TokenURL: srv.tokenURL, PrivateJWK: rsPriv,
		}, withJTI(func() string { return jti }))
		if err != nil {
			t.Fatal(err)
		}
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatalf("first use of the jti: %v", err)
		}
		ts.Invalidate(first)
		_, err = ts.Token(ctx)
		assertRejected(t, err)
	})

	t.Run("cache returns the same token", func(t *testing.T) {
		hc, counter := newCountingClient()
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: esClient, TokenURL: srv.tokenURL, PrivateJWK: esPriv,
		}, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		a, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Error("second Token call returned a different token")
		}
		if n := counter.total.Load(); n != 1 {
			t.Errorf("token requests = %d, want 1", n)
		}
	})

	t.Run("concurrent callers share one fetch", func(t *testing.T) {
		hc, counter := newCountingClient()
		ts, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: secret, TokenURL: srv.tokenURL,
		}, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		tokens := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { tokens[i], errs[i] = ts.Token(ctx) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if tokens[i] != tokens[0] {
				t.Error("concurrent callers got different tokens")
			}
		}
		if got := counter.total.Load(); got != 1 {
			t.Errorf("token requests = %d, want 1", got)
		}
	})

	t.Run("refresh before expiry", func(t *testing.T) {
		clock := newFakeClock()
		hc, counter := newCountingClient()
		ts, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: secret, TokenURL: srv.tokenURL,
		}, WithHTTPClient(hc), WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Lifetime 60s: renewal margin max(10s, 6s) = 10s.
		clock.Advance(49 * time.Second)
		same, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if same != first || counter.total.Load() != 1 {
			t.Fatalf("token renewed with 11s left (requests = %d); want reuse until fewer than 10s remain", counter.total.Load())
		}
		clock.Advance(2 * time.Second) // 9s left
		renewed, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if renewed == first || counter.total.Load() != 2 {
			t.Errorf("token not renewed with 9s left (requests = %d)", counter.total.Load())
		}
	})

	t.Run("expiry tolerance sets the renewal margin", func(t *testing.T) {
		clock := newFakeClock()
		hc, counter := newCountingClient()
		ts, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: secret, TokenURL: srv.tokenURL,
		}, WithHTTPClient(hc), WithClock(clock.Now), WithExpiryTolerance(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(29 * time.Second) // 31 s left
		if same, _ := ts.Token(ctx); same != first || counter.total.Load() != 1 {
			t.Fatalf("renewed with 31 s left (requests = %d), want reuse until fewer than 30 s remain", counter.total.Load())
		}
		clock.Advance(2 * time.Second) // 29 s left
		if renewed, _ := ts.Token(ctx); renewed == first || counter.total.Load() != 2 {
			t.Errorf("not renewed with 29 s left (requests = %d)", counter.total.Load())
		}

		// A token living less than the tolerance is refused, as Pathling's
		// client refuses it.
		short, err := NewClientCredentials(ClientCredentialsConfig{
			ClientID: secretClient, ClientSecret: secret, TokenURL: srv.tokenURL,
		}, WithExpiryTolerance(120*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := short.Token(ctx); err == nil || !strings.Contains(err.Error(), "shorter than the expiry tolerance") {
			t.Errorf("60 s token with a 120 s tolerance: err = %v", err)
		}
	})

	t.Run("invalidate forces a new fetch", func(t *testing.T) {
		hc, counter := newCountingClient()
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: rsClient, TokenURL: srv.tokenURL, PrivateJWK: rsPriv,
		}, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ts.Invalidate("some-other-token")
		if again, _ := ts.Token(ctx); again != first {
			t.Fatal("invalidating another token dropped the cached one")
		}
		ts.Invalidate(first)
		second, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if second == first {
			t.Error("Invalidate did not force a new token")
		}
		if n := counter.total.Load(); n != 2 {
			t.Errorf("token requests = %d, want 2", n)
		}
	})

	t.Run("token endpoint discovered from smart-configuration", func(t *testing.T) {
		fhir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/fhir/.well-known/smart-configuration" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"token_endpoint":                                   srv.tokenURL,
				"token_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
				"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
				"capabilities":                                     []string{"client-confidential-asymmetric"},
			})
		}))
		t.Cleanup(fhir.Close)
		hc, counter := newCountingClient()
		ts, err := NewSMARTBackend(SMARTBackendConfig{
			ClientID: esClient, FHIRBaseURL: fhir.URL + "/fhir/", PrivateJWK: esPriv, Scope: scope,
		}, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if claims := tokenClaims(t, first); claims["client_id"] != esClient {
			t.Errorf("client_id = %v", claims["client_id"])
		}
		ts.Invalidate(first)
		if _, err := ts.Token(ctx); err != nil {
			t.Fatal(err)
		}
		if n := counter.count("/fhir/.well-known/smart-configuration"); n != 1 {
			t.Errorf("discovery requests = %d, want 1 (the endpoint is kept)", n)
		}
	})
}
