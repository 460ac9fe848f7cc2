package pathling

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIssuer   = "https://idp.example.com/realms/pathling"
	testAudience = "pathling"
)

type tokenIssuer struct {
	key  *rsa.PrivateKey
	kid  string
	jwks jose.JSONWebKeySet
}

var (
	issuerOnce          sync.Once
	sharedIss, otherIss *tokenIssuer
)

func newTokenIssuer(t *testing.T, kid string) *tokenIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &tokenIssuer{key: key, kid: kid, jwks: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}}}}
}

// issuers returns the trusted issuer and an untrusted one with the same kid (RSA keys are slow
// to make, so they are shared).
func issuers(t *testing.T) (*tokenIssuer, *tokenIssuer) {
	issuerOnce.Do(func() {
		sharedIss = newTokenIssuer(t, "k1")
		otherIss = newTokenIssuer(t, "k1")
	})
	return sharedIss, otherIss
}

type tokenClaims struct {
	jwt.Claims
	Authorities any `json:"authorities,omitempty"`
}

func (i *tokenIssuer) token(t *testing.T, mutate func(*tokenClaims)) string {
	t.Helper()
	c := tokenClaims{
		Claims: jwt.Claims{
			Issuer:   testIssuer,
			Subject:  "client-a",
			Audience: jwt.Audience{testAudience},
			IssuedAt: jwt.NewNumericDate(time.Now()),
			Expiry:   jwt.NewNumericDate(time.Now().Add(time.Hour)),
			ID:       newJobID(),
		},
		Authorities: []string{"pathling:import-pnp", "pathling:write", "pathling:read"},
	}
	if mutate != nil {
		mutate(&c)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: i.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", i.kid))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withToken(h http.Header, tok string) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

func authHarness(t *testing.T, cfg Config) (*harness, *tokenIssuer, *tokenIssuer) {
	iss, other := issuers(t)
	cfg.Auth = &AuthConfig{Issuer: testIssuer, Audience: testAudience, Keys: iss.jwks}
	if cfg.AllowableExportURLs != nil { // a pull-mode test brings its own source
		return newHarness(t, cfg), iss, other
	}
	return scriptedHarness(t, cfg), iss, other
}

func wantUnauthorized(t *testing.T, r response, invalid bool) {
	t.Helper()
	if r.status != http.StatusUnauthorized || len(r.body) != 0 {
		t.Fatalf("want 401 with an empty body (Spring Security), got %s", r)
	}
	ch := r.header.Get("WWW-Authenticate")
	if invalid && !strings.HasPrefix(ch, `Bearer error="invalid_token"`) || !invalid && ch != "Bearer" {
		t.Fatalf("WWW-Authenticate = %q", ch)
	}
}

func TestAuthUnauthorized(t *testing.T) {
	h, iss, other := authHarness(t, Config{})
	hdr := kickOffHeaders()
	hdr.Del("Prefer") // 401 comes before everything else
	bad := body(codeParam("saveMode", "bogus"))
	wantUnauthorized(t, h.kickOff(t, hdr, bad), false)
	wantUnauthorized(t, h.kickOff(t, withToken(hdr, "not-a-jwt"), bad), true)
	wantUnauthorized(t, h.kickOff(t, withToken(hdr, other.token(t, nil)), bad), true)
	wantUnauthorized(t, h.kickOff(t, withToken(hdr, iss.token(t, func(c *tokenClaims) { c.Issuer = "https://other" })), bad), true)
	wantUnauthorized(t, h.kickOff(t, withToken(hdr, iss.token(t, func(c *tokenClaims) { c.Audience = jwt.Audience{"x"} })), bad), true)
	wantUnauthorized(t, h.kickOff(t, withToken(hdr, iss.token(t, func(c *tokenClaims) {
		c.Expiry = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	})), bad), true)
	// Within Spring's 60 s clock skew an expired token still passes.
	r := h.kickOff(t, withToken(kickOffHeaders(), iss.token(t, func(c *tokenClaims) {
		c.Expiry = jwt.NewNumericDate(time.Now().Add(-10 * time.Second))
	})), body(urlParam(srcURL)))
	if r.status != http.StatusAccepted {
		t.Fatalf("token inside the leeway: %s", r)
	}
	loc := r.header.Get("Content-Location")

	wantUnauthorized(t, poll(t, loc, http.Header{"Accept": {"application/fhir+json"}}), false)
	wantUnauthorized(t, do(t, http.MethodDelete, loc, nil, nil), false)
	wantUnauthorized(t, do(t, http.MethodGet, h.base()+"/Patient?_summary=count", nil, nil), false)
	if r := do(t, http.MethodGet, h.base()+"/metadata", nil, nil); r.status != 200 {
		t.Fatalf("metadata needs no token: %s", r)
	}
	if c := h.emu.Counters(); c.Rejected != 6 || c.JobsCreated != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestAuthForbiddenAtKickOff(t *testing.T) {
	h, iss, _ := authHarness(t, Config{})
	readOnly := iss.token(t, func(c *tokenClaims) { c.Authorities = []string{"pathling:read", "pathling:import"} })
	// 403 comes before the body parameter checks.
	wantError(t, h.kickOff(t, withToken(kickOffHeaders(), readOnly), body(codeParam("saveMode", "bogus"))), 403,
		"Missing authority: 'pathling:import-pnp'")

	for name, auths := range map[string]any{
		"superuser":            []string{"pathling"},
		"exact authority":      []string{"pathling:import-pnp"},
		"space-separated":      "openid pathling:import-pnp",
		"ignores non-pathling": []string{"admin", "pathling:import-pnp"},
	} {
		tok := iss.token(t, func(c *tokenClaims) { c.Authorities = auths })
		if r := h.kickOff(t, withToken(kickOffHeaders(), tok), body(urlParam(srcURL))); r.status != http.StatusAccepted {
			t.Errorf("%s: want 202, got %s", name, r)
		}
	}
}

func TestAuthJobOwnership(t *testing.T) {
	h, iss, _ := authHarness(t, Config{})
	if err := h.emu.SetDefaultScript(Script{Polls: 5}); err != nil {
		t.Fatal(err)
	}
	alice := iss.token(t, func(c *tokenClaims) { c.Subject = "alice" })
	alice2 := iss.token(t, func(c *tokenClaims) { c.Subject = "alice" }) // a refreshed token
	bob := iss.token(t, func(c *tokenClaims) { c.Subject = "bob" })
	bobNoImport := iss.token(t, func(c *tokenClaims) { c.Subject = "bob"; c.Authorities = []string{"pathling:read"} })
	noSub := iss.token(t, func(c *tokenClaims) { c.Subject = "" })

	loc := h.mustKickOff(t, withToken(kickOffHeaders(), alice), body(urlParam(srcURL)))
	accept := http.Header{"Accept": {"application/fhir+json"}}
	if r := poll(t, loc, withToken(accept, alice2)); r.status != http.StatusAccepted {
		t.Fatalf("owner with a refreshed token: %s", r)
	}
	wantError(t, poll(t, loc, withToken(accept, bob)), 403, "The requested job is not owned by the current user")
	wantError(t, poll(t, loc, withToken(accept, noSub)), 403, "The requested job is not owned by the current user")
	wantError(t, poll(t, loc, withToken(accept, bobNoImport)), 403, "Missing authority: 'pathling:import-pnp'")

	// A refreshed token is a different Authorization value: a new job, side by side.
	if again := h.mustKickOff(t, withToken(kickOffHeaders(), alice2), body(urlParam(srcURL))); again == loc {
		t.Fatal("a new Authorization value must make a new job")
	}
	if again := h.mustKickOff(t, withToken(kickOffHeaders(), alice), body(urlParam(srcURL))); again != loc {
		t.Fatal("the identical request must get the same job")
	}

	// DELETE makes no ownership check.
	if r := do(t, http.MethodDelete, loc, withToken(nil, bob), nil); r.status != http.StatusAccepted {
		t.Fatalf("delete by another user: %s", r)
	}
	wantError(t, poll(t, loc, withToken(accept, alice)), 404, "Job ID not found")
}

// pathling:write is checked only inside the job, after the download: a 400 job failure.
func TestAuthLateWriteAuthority(t *testing.T) {
	t.Run("scripted", func(t *testing.T) {
		h, iss, _ := authHarness(t, Config{})
		noWrite := iss.token(t, func(c *tokenClaims) { c.Authorities = []string{"pathling:import-pnp"} })
		typeWrite := iss.token(t, func(c *tokenClaims) {
			c.Authorities = []string{"pathling:import-pnp", "pathling:write:Patient"}
		})
		writer := iss.token(t, func(c *tokenClaims) { c.Authorities = []string{"pathling:import-pnp", "pathling:write"} })
		accept := http.Header{"Accept": {"application/fhir+json"}}
		for _, tok := range []string{noWrite, typeWrite} {
			loc := h.mustKickOff(t, withToken(kickOffHeaders(), tok), body(urlParam(srcURL)))
			wantError(t, poll(t, loc, withToken(accept, tok)), 400, "Ping and pull import failed: Missing authority: 'pathling:write'")
		}
		loc := h.mustKickOff(t, withToken(kickOffHeaders(), writer), body(urlParam(srcURL)))
		if r := poll(t, loc, withToken(accept, writer)); r.status != http.StatusOK {
			t.Fatalf("writer: %s", r)
		}
	})
	t.Run("pull", func(t *testing.T) {
		fs := newFakeSource(t)
		fs.setFiles(map[string][]string{"Patient": {patients("p1")}})
		h, iss, _ := authHarness(t, Config{Mode: ModePull, AllowableExportURLs: []string{fs.srv.URL},
			AllowInsecureURLs: true, AllowInternalURLs: true, PollInterval: 5 * time.Millisecond})
		noWrite := iss.token(t, func(c *tokenClaims) { c.Authorities = []string{"pathling:import-pnp"} })
		accept := withToken(http.Header{"Accept": {"application/fhir+json"}}, noWrite)
		loc := h.mustKickOff(t, withToken(kickOffHeaders(), noWrite), body(urlParam(fs.base())))
		wantError(t, pollUntilDone(t, loc, accept), 400, "Ping and pull import failed: Missing authority: 'pathling:write'")
		if _, _, _, downloads, _ := fs.counts(); len(downloads) != 1 {
			t.Fatalf("the download happens before the write check: %v", downloads)
		}
		if len(h.emu.ResourceTypes()) != 0 {
			t.Fatal("imported without write authority")
		}
	})
}

func TestAuthorityParsing(t *testing.T) {
	p := &principal{}
	for _, s := range []string{"pathling:write", "pathling:read:Patient", "bogus", "pathling::x"} {
		if a, ok := parseAuthority(s); ok {
			p.authorities = append(p.authorities, a)
		}
	}
	for req, want := range map[string]bool{
		"pathling:write":          true,
		"pathling:write:Patient":  true,
		"pathling:read:Patient":   true,
		"pathling:read:Condition": false,
		"pathling:read":           false,
		"pathling:import-pnp":     false,
		"pathling":                false,
	} {
		if got := p.has(req); got != want {
			t.Errorf("has(%q) = %v, want %v", req, got, want)
		}
	}
	var off *principal
	if !off.has("pathling:write") {
		t.Error("auth off must allow everything")
	}
}
