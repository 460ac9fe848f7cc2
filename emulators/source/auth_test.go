package source

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

// testClient is a registered SMART Backend Services client.
type testClient struct {
	id  string
	key jose.JSONWebKey // private
	alg jose.SignatureAlgorithm
}

func newECClient(t *testing.T, id string) testClient {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testClient{id: id, key: jose.JSONWebKey{Key: priv, KeyID: id + "-es384", Algorithm: "ES384", Use: "sig"}, alg: jose.ES384}
}

func (c testClient) publicSet() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{c.key.Public()}}
}

// assertion signs a client assertion; mutate may change the claims before signing.
func (c testClient) assertion(t *testing.T, aud string, now time.Time, mutate func(*jwt.Claims)) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: c.alg, Key: c.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.Claims{
		Issuer: c.id, Subject: c.id, Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(now.Add(4 * time.Minute)), ID: uuid.NewString(),
	}
	if mutate != nil {
		mutate(&claims)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// requestToken posts a token request and returns the status and decoded JSON body.
func (h *harness) requestToken(form url.Values) (int, map[string]any) {
	h.t.Helper()
	status, hdr, body := h.do(http.MethodPost, h.http.URL+tokenPath,
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader(form.Encode()))
	if hdr.Get("Cache-Control") != "no-store" {
		h.t.Errorf("token response without Cache-Control: no-store")
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		h.t.Fatalf("token response %s: %v", body, err)
	}
	return status, out
}

func tokenForm(assertion, scope string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {jwtBearerAssertion},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
}

func newAuthHarness(t *testing.T, clients ...testClient) *harness {
	t.Helper()
	reg := map[string]jose.JSONWebKeySet{}
	for _, c := range clients {
		reg[c.id] = c.publicSet()
	}
	return newHarness(t, Config{Patients: 3, Auth: &AuthConfig{Clients: reg, TokenLifetime: 2 * time.Minute}})
}

func TestSmartDiscovery(t *testing.T) {
	c := newECClient(t, "pathling")
	h := newAuthHarness(t, c)
	status, _, body := h.do(http.MethodGet, h.base+"/.well-known/smart-configuration", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("smart-configuration: %d", status)
	}
	var conf smartConfiguration
	if err := json.Unmarshal(body, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.TokenEndpoint != h.http.URL+tokenPath ||
		!contains(conf.TokenEndpointAuthMethodsSupported, "private_key_jwt") ||
		!contains(conf.TokenEndpointAuthSigningAlgs, "RS384") || !contains(conf.TokenEndpointAuthSigningAlgs, "ES384") ||
		!contains(conf.GrantTypesSupported, "client_credentials") {
		t.Fatalf("configuration %+v", conf)
	}
}

func TestAuthenticatedExport(t *testing.T) {
	c := newECClient(t, "pathling")
	h := newAuthHarness(t, c)
	aud := h.http.URL + tokenPath

	// Without a token everything on the export path is 401.
	status, hdr, body := h.do(http.MethodGet, h.base+"/$export", asyncHeaders(), nil)
	if status != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("kick-off without token: %d %q", status, hdr.Get("WWW-Authenticate"))
	}
	outcomeDiagnostics(t, body)

	status, tok := h.requestToken(tokenForm(c.assertion(t, aud, h.clock.Now(), nil), "system/*.read"))
	if status != http.StatusOK || tok["token_type"] != "bearer" || tok["expires_in"] != 120.0 || tok["scope"] != "system/*.read" {
		t.Fatalf("token: %d %v", status, tok)
	}
	h.bearer = tok["access_token"].(string)
	statusURL := h.kickOff(nil)
	m := h.waitManifest(statusURL)
	if !m.RequiresAccessToken {
		t.Fatal("requiresAccessToken is false")
	}
	res := h.fetchAll(m)
	if res.count("Patient") != 3 {
		t.Fatalf("patients %d", res.count("Patient"))
	}

	// Status and files need the token too.
	h.bearer = ""
	for _, u := range []string{statusURL, m.Output[0].URL} {
		if status, _, _ := h.do(http.MethodGet, u, nil, nil); status != http.StatusUnauthorized {
			t.Fatalf("GET %s without token: %d", u, status)
		}
		if status, _, _ := h.do(http.MethodGet, u, http.Header{"Authorization": {"Bearer not-a-token"}}, nil); status != http.StatusUnauthorized {
			t.Fatalf("GET %s with an unknown token: %d", u, status)
		}
	}
	if status, _, _ := h.do(http.MethodDelete, statusURL, nil, nil); status != http.StatusUnauthorized {
		t.Fatalf("DELETE without token: %d", status)
	}

	// Tokens expire on the server's clock.
	h.bearer = tok["access_token"].(string)
	h.clock.Advance(2 * time.Minute)
	if status, _, body := h.do(http.MethodGet, statusURL, nil, nil); status != http.StatusUnauthorized ||
		!strings.Contains(outcomeDiagnostics(t, body), "expired") {
		t.Fatalf("expired token: %d %s", status, body)
	}
	c2 := h.src.Counters()
	if c2.TokensIssued != 1 || c2.Unauthorized < 6 {
		t.Fatalf("counters %+v", c2)
	}
}

func TestTokenRequestRejections(t *testing.T) {
	c := newECClient(t, "pathling")
	stranger := newECClient(t, "pathling") // same client id, unregistered key
	h := newAuthHarness(t, c)
	aud := h.http.URL + tokenPath
	now := h.clock.Now()

	reused := c.assertion(t, aud, now, nil)
	if status, _ := h.requestToken(tokenForm(reused, "system/*.read")); status != http.StatusOK {
		t.Fatalf("first use of an assertion: %d", status)
	}

	cases := []struct {
		name string
		form url.Values
		code string
	}{
		{"reused jti", tokenForm(reused, "system/*.read"), "invalid_client"},
		{"wrong key", tokenForm(stranger.assertion(t, aud, now, nil), "system/*.read"), "invalid_client"},
		{"unknown client", tokenForm(newECClient(t, "other").assertion(t, aud, now, nil), "system/*.read"), "invalid_client"},
		{"wrong aud", tokenForm(c.assertion(t, h.base, now, nil), "system/*.read"), "invalid_client"},
		{"sub differs", tokenForm(c.assertion(t, aud, now, func(cl *jwt.Claims) { cl.Subject = "x" }), "system/*.read"), "invalid_client"},
		{"no exp", tokenForm(c.assertion(t, aud, now, func(cl *jwt.Claims) { cl.Expiry = nil }), "system/*.read"), "invalid_client"},
		{"exp too far", tokenForm(c.assertion(t, aud, now, func(cl *jwt.Claims) { cl.Expiry = jwt.NewNumericDate(now.Add(10 * time.Minute)) }), "system/*.read"), "invalid_client"},
		{"expired", tokenForm(c.assertion(t, aud, now, func(cl *jwt.Claims) { cl.Expiry = jwt.NewNumericDate(now.Add(-2 * time.Minute)) }), "system/*.read"), "invalid_client"},
		{"no jti", tokenForm(c.assertion(t, aud, now, func(cl *jwt.Claims) { cl.ID = "" }), "system/*.read"), "invalid_client"},
		{"garbage", tokenForm("not.a.jwt", "system/*.read"), "invalid_client"},
		{"no scope", tokenForm(c.assertion(t, aud, now, nil), ""), "invalid_scope"},
		{"write scope only", tokenForm(c.assertion(t, aud, now, nil), "system/*.write launch"), "invalid_scope"},
		{"password grant", url.Values{"grant_type": {"password"}}, "unsupported_grant_type"},
		{"client secret", url.Values{"grant_type": {"client_credentials"}, "client_secret": {"s"}}, "invalid_client"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := h.requestToken(tc.form)
			if status != http.StatusBadRequest || body["error"] != tc.code {
				t.Fatalf("status %d body %v, want 400 %s", status, body, tc.code)
			}
		})
	}
	// HS256 is not an accepted algorithm.
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	hs, _ := jwt.Signed(signer).Claims(jwt.Claims{Issuer: c.id, Subject: c.id, Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: "hs"}).Serialize()
	if status, body := h.requestToken(tokenForm(hs, "system/*.read")); status != http.StatusBadRequest || body["error"] != "invalid_client" {
		t.Fatalf("HS256 assertion: %d %v", status, body)
	}
	if got := h.src.Counters().TokensRejected; got != int64(len(cases)+1) {
		t.Fatalf("TokensRejected %d", got)
	}
}

func TestRS384AndScopes(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaClient := testClient{id: "rsa", key: jose.JSONWebKey{Key: priv, KeyID: "r1"}, alg: jose.RS384}
	ec := newECClient(t, "narrow")
	h := newAuthHarness(t, rsaClient, ec)
	aud := h.http.URL + tokenPath

	status, tok := h.requestToken(tokenForm(rsaClient.assertion(t, aud, h.clock.Now(), nil), "system/*.rs"))
	if status != http.StatusOK {
		t.Fatalf("RS384 token: %d %v", status, tok)
	}
	rsaToken := tok["access_token"].(string)

	status, tok = h.requestToken(tokenForm(ec.assertion(t, aud, h.clock.Now(), nil), "system/Patient.read openid"))
	if status != http.StatusOK || tok["scope"] != "system/Patient.read" {
		t.Fatalf("narrow token: %d %v", status, tok)
	}
	h.bearer = tok["access_token"].(string)
	// A type outside the scopes is refused; without _type only permitted types are exported.
	status, _, body := h.do(http.MethodGet, h.base+"/$export?_type=Patient,Observation", asyncHeaders(), nil)
	if status != http.StatusForbidden {
		t.Fatalf("out-of-scope _type: %d %s", status, body)
	}
	statusURL := h.kickOff(nil)
	res := h.fetchAll(h.waitManifest(statusURL))
	if got := keys(res.resources); len(got) != 1 || got[0] != "Patient" {
		t.Fatalf("narrow export types %v", got)
	}
	// Another client may not poll, download or delete this export.
	h.bearer = rsaToken
	if status, _, _ := h.do(http.MethodGet, statusURL, nil, nil); status != http.StatusForbidden {
		t.Fatalf("other client's poll: %d", status)
	}
	if status, _, _ := h.do(http.MethodDelete, statusURL, nil, nil); status != http.StatusForbidden {
		t.Fatalf("other client's DELETE: %d", status)
	}
}

func TestAuthConfigValidation(t *testing.T) {
	if _, err := New(Config{Auth: &AuthConfig{}}); err == nil {
		t.Fatal("Auth without clients accepted")
	}
	if _, err := New(Config{Auth: &AuthConfig{Clients: map[string]jose.JSONWebKeySet{"c": {}}}}); err == nil {
		t.Fatal("client without keys accepted")
	}
	// A private key is accepted and only its public part kept.
	c := newECClient(t, "c")
	if _, err := New(Config{Auth: &AuthConfig{Clients: map[string]jose.JSONWebKeySet{"c": {Keys: []jose.JSONWebKey{c.key}}}}}); err != nil {
		t.Fatalf("private JWK: %v", err)
	}
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}
