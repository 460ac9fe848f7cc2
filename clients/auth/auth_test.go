package auth

import (
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

// tokenEndpoint is a scripted token endpoint recording the forms it gets.
type tokenEndpoint struct {
	mu      sync.Mutex
	forms   []url.Values
	headers []http.Header
	calls   atomic.Int64
	respond func(w http.ResponseWriter, n int64)
}

func newTokenEndpoint(t *testing.T, respond func(w http.ResponseWriter, n int64)) (*tokenEndpoint, *httptest.Server) {
	t.Helper()
	te := &tokenEndpoint{respond: respond}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/token" {
			http.Error(w, "unexpected request", http.StatusNotFound)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		te.mu.Lock()
		te.forms = append(te.forms, r.PostForm)
		te.headers = append(te.headers, r.Header.Clone())
		te.mu.Unlock()
		te.respond(w, te.calls.Add(1))
	}))
	t.Cleanup(srv.Close)
	return te, srv
}

func (te *tokenEndpoint) form(i int) url.Values {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.forms[i]
}

func (te *tokenEndpoint) header(i int) http.Header {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.headers[i]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func okToken(expiresIn any) func(http.ResponseWriter, int64) {
	return func(w http.ResponseWriter, n int64) {
		body := map[string]any{"access_token": "tok-" + string(rune('a'+n-1)), "token_type": "Bearer"}
		if expiresIn != nil {
			body["expires_in"] = expiresIn
		}
		writeJSON(w, http.StatusOK, body)
	}
}

func TestRefreshMargin(t *testing.T) {
	for _, tc := range []struct{ lifetime, want time.Duration }{
		{time.Hour, 6 * time.Minute},
		{5 * time.Minute, 30 * time.Second},
		{60 * time.Second, 10 * time.Second},
		{30 * time.Second, 10 * time.Second},
		{20 * time.Second, 10 * time.Second},
		{8 * time.Second, 4 * time.Second}, // never more than half the lifetime
	} {
		if got := refreshMargin(tc.lifetime); got != tc.want {
			t.Errorf("refreshMargin(%s) = %s, want %s", tc.lifetime, got, tc.want)
		}
	}
}

func TestStatic(t *testing.T) {
	ts := Static("abc")
	tok, err := ts.Token(context.Background())
	if err != nil || tok != "abc" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	ts.Invalidate("abc")
	if tok, _ := ts.Token(context.Background()); tok != "abc" {
		t.Error("a static token cannot be replaced")
	}
	if _, err := Static("").Token(context.Background()); err == nil {
		t.Error("empty static token: want an error")
	}
}

func TestClientCredentialsRequest(t *testing.T) {
	te, srv := newTokenEndpoint(t, okToken(3600))
	ts, err := NewClientCredentials(ClientCredentialsConfig{
		ClientID: "my client", ClientSecret: "p@ss:word", TokenURL: srv.URL + "/token", Scope: "system/*.read",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	form, h := te.form(0), te.header(0)
	if form.Get("grant_type") != "client_credentials" || form.Get("scope") != "system/*.read" {
		t.Errorf("form = %v", form)
	}
	if form.Has("client_secret") || form.Has("client_id") {
		t.Error("client_secret_basic must not put credentials in the body")
	}
	user, pass, ok := (&http.Request{Header: h}).BasicAuth()
	if !ok {
		t.Fatal("no Basic authorization")
	}
	// RFC 6749 §2.3.1: form-encoded before Basic.
	if user != "my+client" || pass != "p%40ss%3Aword" {
		t.Errorf("basic = %q:%q", user, pass)
	}
	if ct := h.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", ct)
	}

	// No scope configured: no scope parameter.
	te2, srv2 := newTokenEndpoint(t, okToken(3600))
	ts2, _ := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: "s", TokenURL: srv2.URL + "/token"})
	if _, err := ts2.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if te2.form(0).Has("scope") {
		t.Error("empty scope must be omitted")
	}
}

func TestSMARTAssertion(t *testing.T) {
	key := newRSAKey(t)
	te, srv := newTokenEndpoint(t, okToken(300))
	clock := newFakeClock()
	tokenURL := srv.URL + "/token"
	ts, err := NewSMARTBackend(SMARTBackendConfig{
		ClientID: "backend", Scope: "system/*.read", TokenURL: tokenURL,
		PrivateJWK: jwkJSON(t, key, "key-1", ""),
	}, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ts.Invalidate(first)
	if _, err := ts.Token(context.Background()); err != nil {
		t.Fatal(err)
	}

	jtis := map[string]bool{}
	for i := range 2 {
		form := te.form(i)
		if form.Get("grant_type") != "client_credentials" ||
			form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
			form.Get("scope") != "system/*.read" {
			t.Errorf("form = %v", form)
		}
		if te.header(i).Get("Authorization") != "" {
			t.Error("private_key_jwt must not send an Authorization header")
		}
		parsed, err := jwt.ParseSigned(form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.RS384})
		if err != nil {
			t.Fatalf("assertion: %v", err)
		}
		if h := parsed.Headers[0]; h.KeyID != "key-1" || h.Algorithm != "RS384" || h.ExtraHeaders["typ"] != "JWT" {
			t.Errorf("header = %+v", h)
		}
		var c jwt.Claims
		if err := parsed.Claims(&key.PublicKey, &c); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if c.Issuer != "backend" || c.Subject != "backend" || len(c.Audience) != 1 || c.Audience[0] != tokenURL {
			t.Errorf("claims = %+v", c)
		}
		if lifetime := c.Expiry.Time().Sub(clock.Now()); lifetime <= 0 || lifetime > 5*time.Minute {
			t.Errorf("exp is %s ahead, want (0, 5m]", lifetime)
		}
		if _, err := uuid.Parse(c.ID); err != nil {
			t.Errorf("jti %q is not a UUID", c.ID)
		}
		jtis[c.ID] = true
	}
	if len(jtis) != 2 {
		t.Error("two assertions share a jti")
	}
}

func TestSMARTConfigValidation(t *testing.T) {
	rsaKey := newRSAKey(t)
	p384 := newECKey(t, elliptic.P384())
	p256 := newECKey(t, elliptic.P256())
	good := jwkJSON(t, rsaKey, "k", "")
	for _, tc := range []struct {
		name string
		cfg  SMARTBackendConfig
	}{
		{"no client id", SMARTBackendConfig{TokenURL: "https://a/token", PrivateJWK: good}},
		{"no endpoint", SMARTBackendConfig{ClientID: "c", PrivateJWK: good}},
		{"relative token url", SMARTBackendConfig{ClientID: "c", TokenURL: "/token", PrivateJWK: good}},
		{"userinfo in token url", SMARTBackendConfig{ClientID: "c", TokenURL: "https://u:p@a/token", PrivateJWK: good}},
		{"no key", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token"}},
		{"garbage key", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: []byte(`{"kty":"RSA"}`)}},
		{"public key", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: jwkJSON(t, &rsaKey.PublicKey, "k", "")}},
		{"P-256 key", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: jwkJSON(t, p256, "k", "")}},
		{"alg does not fit key", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: good, Alg: "ES384"}},
		{"unsupported alg", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: good, Alg: "RS256"}},
		{"no kid", SMARTBackendConfig{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: jwkJSON(t, rsaKey, "", "")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSMARTBackend(tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if strings.Contains(err.Error(), `"d"`) {
				t.Errorf("error quotes key material: %v", err)
			}
		})
	}
	ok := []SMARTBackendConfig{
		{ClientID: "c", TokenURL: "https://a/token", PrivateJWK: good, Alg: "RS384"},
		{ClientID: "c", FHIRBaseURL: "https://a/fhir", PrivateJWK: jwkJSON(t, p384, "", ""), KeyID: "override"},
	}
	for _, cfg := range ok {
		if _, err := NewSMARTBackend(cfg); err != nil {
			t.Errorf("%+v: %v", cfg.Alg, err)
		}
	}
	if _, err := NewSMARTBackend(ok[0], WithRequestTimeout(0)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("zero timeout: err = %v, want ErrInvalidOption", err)
	}
	if _, err := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", TokenURL: "https://a/token"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("no secret: err = %v, want ErrInvalidConfig", err)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	const secret = "super-secret-value"
	for _, tc := range []struct {
		name      string
		respond   func(http.ResponseWriter, int64)
		status    int
		code      string
		retryable bool
	}{
		{"400 invalid_grant", func(w http.ResponseWriter, _ int64) {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "nope"})
		}, 400, "invalid_grant", false},
		{"401 echoing the secret", func(w http.ResponseWriter, _ int64) {
			writeJSON(w, 401, map[string]string{"error": "invalid_client", "error_description": "bad secret " + secret})
		}, 401, "invalid_client", false},
		{"403", func(w http.ResponseWriter, _ int64) { w.WriteHeader(403) }, 403, "", false},
		{"429", func(w http.ResponseWriter, _ int64) { w.WriteHeader(429) }, 429, "", true},
		{"500", func(w http.ResponseWriter, _ int64) { w.WriteHeader(500) }, 500, "", true},
		{"503 html", func(w http.ResponseWriter, _ int64) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			_, _ = w.Write([]byte("<html>down</html>"))
		}, 503, "", true},
		{"200 without token", func(w http.ResponseWriter, _ int64) { writeJSON(w, 200, map[string]any{"token_type": "Bearer"}) }, 200, "", false},
		{"200 garbage", func(w http.ResponseWriter, _ int64) { _, _ = w.Write([]byte("not json")) }, 200, "", false},
		{"200 DPoP token", func(w http.ResponseWriter, _ int64) {
			writeJSON(w, 200, map[string]any{"access_token": "x", "token_type": "DPoP", "expires_in": 60})
		}, 200, "", false},
		{"200 negative expiry", func(w http.ResponseWriter, _ int64) {
			writeJSON(w, 200, map[string]any{"access_token": "x", "token_type": "Bearer", "expires_in": -5})
		}, 200, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, srv := newTokenEndpoint(t, tc.respond)
			ts, err := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: secret, TokenURL: srv.URL + "/token"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = ts.Token(context.Background())
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("want *Error, got %T %v", err, err)
			}
			if ae.Status != tc.status || ae.Code != tc.code || ae.Retryable != tc.retryable {
				t.Errorf("got status %d code %q retryable %v, want %d %q %v", ae.Status, ae.Code, ae.Retryable, tc.status, tc.code, tc.retryable)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}

	t.Run("network error is retryable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		tokenURL := srv.URL + "/token"
		srv.Close()
		ts, _ := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: secret, TokenURL: tokenURL})
		_, err := ts.Token(context.Background())
		var ae *Error
		if !errors.As(err, &ae) || !ae.Retryable || ae.Status != 0 {
			t.Fatalf("err = %v, want retryable *Error without status", err)
		}
	})

	t.Run("request timeout", func(t *testing.T) {
		release := make(chan struct{})
		_, srv := newTokenEndpoint(t, func(w http.ResponseWriter, _ int64) { <-release })
		defer close(release)
		ts, _ := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: secret, TokenURL: srv.URL + "/token"},
			WithRequestTimeout(100*time.Millisecond))
		start := time.Now()
		_, err := ts.Token(context.Background())
		var ae *Error
		if !errors.As(err, &ae) || !ae.Retryable || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want retryable deadline error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s", d)
		}
	})
}

func TestDefaultLifetimeWithoutExpiresIn(t *testing.T) {
	te, srv := newTokenEndpoint(t, okToken(nil))
	clock := newFakeClock()
	ts, _ := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/token"}, WithClock(clock.Now))
	ctx := context.Background()
	first, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(4*time.Minute + 29*time.Second) // 5 min lifetime, 30 s margin
	if tok, _ := ts.Token(ctx); tok != first {
		t.Fatal("renewed too early")
	}
	clock.Advance(2 * time.Second)
	if tok, _ := ts.Token(ctx); tok == first {
		t.Fatal("not renewed 29s before the assumed expiry")
	}
	if n := te.calls.Load(); n != 2 {
		t.Errorf("calls = %d, want 2", n)
	}
}

func TestSingleflightAndCancel(t *testing.T) {
	release := make(chan struct{})
	te, srv := newTokenEndpoint(t, func(w http.ResponseWriter, n int64) {
		<-release
		okToken(60)(w, n)
	})
	ts, _ := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/token"})

	// A caller that gives up gets its context error at once...
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := ts.Token(ctx); gaveUp <- err }()
	eventually(t, 5*time.Second, func() bool { return te.calls.Load() == 1 })

	// ...while others keep waiting on the same fetch.
	const n = 5
	var wg sync.WaitGroup
	results := make([]string, n)
	for i := range n {
		wg.Go(func() {
			tok, err := ts.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			results[i] = tok
		})
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: err = %v", err)
	}
	close(release)
	wg.Wait()
	for _, r := range results {
		if r != "tok-a" {
			t.Errorf("got %q, want the one fetched token", r)
		}
	}
	if c := te.calls.Load(); c != 1 {
		t.Errorf("token requests = %d, want 1", c)
	}
	// A done context fails without touching the cache.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := ts.Token(done); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx: err = %v", err)
	}
}

func TestDiscoveryErrors(t *testing.T) {
	key := jwkJSON(t, newECKey(t, elliptic.P384()), "k", "")
	for _, tc := range []struct {
		name      string
		handler   http.HandlerFunc
		retryable bool
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, false},
		{"502", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }, true},
		{"no token_endpoint", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{}) }, false},
		{"relative token_endpoint", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"token_endpoint": "/token"})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			ts, err := NewSMARTBackend(SMARTBackendConfig{ClientID: "c", FHIRBaseURL: srv.URL + "/fhir", PrivateJWK: key})
			if err != nil {
				t.Fatal(err)
			}
			_, err = ts.Token(context.Background())
			var ae *Error
			if !errors.As(err, &ae) || ae.Op != "discovery" || ae.Retryable != tc.retryable {
				t.Fatalf("err = %#v, want discovery error retryable=%v", err, tc.retryable)
			}
		})
	}
}

// An RFC 6749 §5.2 error response is kept whole (error, error_description,
// error_uri) and Reason words it for an operator, without our secret.
func TestErrorResponseReason(t *testing.T) {
	const secret = "s3cret-value"
	_, srv := newTokenEndpoint(t, func(w http.ResponseWriter, _ int64) {
		writeJSON(w, 400, map[string]string{
			"error": "invalid_scope", "error_description": "scope user/*.write is not allowed for " + secret,
			"error_uri": "https://idp.example/errors/invalid_scope",
		})
	})
	ts, err := NewClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: secret, TokenURL: srv.URL + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.Token(context.Background())
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("want *Error, got %T %v", err, err)
	}
	const want = "token server refused: invalid_scope: scope user/*.write is not allowed for [REDACTED] (https://idp.example/errors/invalid_scope)"
	if got := ae.Reason(); got != want {
		t.Errorf("Reason() = %q\nwant       %q", got, want)
	}
	for _, e := range []*Error{
		{Op: "token", Status: 503, Retryable: true},
		{Op: "discovery", Err: errors.New("connection refused")},
	} {
		if r := e.Reason(); r == "" || strings.HasPrefix(r, "auth:") {
			t.Errorf("Reason() of %v = %q", e, r)
		}
	}
}
