package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// metricsOutEnv names a file the authenticated-sync test writes the
// service's /metrics exposition to (scripts/ci-observability.sh runs
// `promtool check metrics` on it).
const metricsOutEnv = "PATHLING_SYNC_METRICS_OUT"

const (
	testIssuer       = "https://idp.test/realms/pathling"
	testClientID     = "pathling-sync-client"
	testClientSecret = "s3cr3t-7f1c9b2e-do-not-log" //nolint:gosec // test secret, must never appear in logs
)

// tokenEndpoint is an OAuth2 token endpoint (client credentials, client
// secret sent as HTTP Basic) issuing RS256 JWTs the Pathling emulator
// trusts. Its first token is already expired, so that the client meets a
// 401 and fetches another.
type tokenEndpoint struct {
	t      *testing.T
	key    *rsa.PrivateKey
	mu     sync.Mutex
	issued []string
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &tokenEndpoint{t: t, key: key}
}

func (te *tokenEndpoint) jwks() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &te.key.PublicKey, KeyID: "k1", Algorithm: string(jose.RS256), Use: "sig"}}}
}

func (te *tokenEndpoint) tokens() []string {
	te.mu.Lock()
	defer te.mu.Unlock()
	return append([]string(nil), te.issued...)
}

func (te *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if r.Method != http.MethodPost || !ok || id != testClientID || secret != testClientSecret || r.PostFormValue("grant_type") != "client_credentials" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	te.mu.Lock()
	n := len(te.issued)
	te.mu.Unlock()
	now := time.Now()
	exp := now.Add(time.Hour)
	if n == 0 {
		exp = now.Add(-2 * time.Hour) // expired beyond the emulator's leeway: a 401
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: te.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		te.t.Error(err)
		return
	}
	claims := struct {
		jwt.Claims
		Authorities []string `json:"authorities"`
	}{
		Claims: jwt.Claims{Issuer: testIssuer, Subject: testClientID, IssuedAt: jwt.NewNumericDate(now),
			Expiry: jwt.NewNumericDate(exp), ID: fmt.Sprintf("jti-%d", n)},
		Authorities: []string{"pathling:import-pnp", "pathling:write", "pathling:read"},
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		te.t.Error(err)
		return
	}
	te.mu.Lock()
	te.issued = append(te.issued, tok)
	te.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
}

// An authenticated sync (OAuth2 client credentials against a Pathling with
// auth on, one 401 and token refresh on the way) logged at debug level:
// the sync completes, no log line holds the client secret or a token, the
// log lines are JSON with trace and span ids, and /metrics shows the run.
func TestAuthenticatedSyncLogsNoSecrets(t *testing.T) {
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	te := newTokenEndpoint(t)
	tokenSrv := httptest.NewServer(te)
	defer tokenSrv.Close()
	_, emuSrv := scriptedPathling(t, pathlingemu.Script{Polls: 2}, func(c *pathlingemu.Config) {
		c.Auth = &pathlingemu.AuthConfig{Issuer: testIssuer, Keys: te.jwks()}
	})

	cfgPath := writeConfigFile(t, `
nats:
  url: %s
redis:
  url: %s
admin:
  addr: 127.0.0.1:0
log:
  level: debug
  format: json
targets:
  main:
    pathling:
      url: %s/fhir
      auth:
        type: client_credentials
        tokenUrl: %s/token
        clientId: %s
        clientSecret: %s
    defaults:
      exportUrl: http://source.test/fhir
    poll:
      initial: 20ms
      max: 100ms
`, ns.ClientURL(), redisURL, emuSrv.URL, tokenSrv.URL, testClientID, testClientSecret)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, logs, logs, envFrom(nil)) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	var adminAddr string
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, rec := range jsonLines(t, logs.String()) {
			if rec["msg"] == "pathling-sync serving" {
				adminAddr, _ = rec["admin"].(string)
				return adminAddr != ""
			}
		}
		return false
	}, "service up: %s", logs.String())

	reqOut := &testenv.Buffer{}
	if code := run(context.Background(), []string{"request", "--config", cfgPath, "--target", "main", "--wait", "--id", "auth-1"},
		reqOut, reqOut, envFrom(nil)); code != 0 {
		t.Fatalf("request exited %d: %s\nservice logs:\n%s", code, reqOut.String(), logs.String())
	}
	if !strings.Contains(reqOut.String(), "SyncCompleted") {
		t.Fatalf("no SyncCompleted: %s", reqOut.String())
	}
	if n := len(te.tokens()); n != 2 {
		t.Fatalf("token endpoint issued %d tokens, want 2 (expired one, then a fresh one after the 401)", n)
	}

	// The outcome is published before the run's end is recorded (the
	// in-flight gauge goes down after it): wait for both.
	var metrics string
	testenv.Eventually(t, 10*time.Second, func() bool {
		var code int
		code, metrics = get(t, "http://"+adminAddr+"/metrics")
		// (One scrape may see the counter and not yet the gauge: gauges are observed first.)
		return code == 200 && strings.Contains(metrics, `pathling_sync_syncs_total{outcome="completed",target="main"} 1`) &&
			strings.Contains(metrics, `pathling_sync_last_success_timestamp_seconds{target="main"}`) &&
			strings.Contains(metrics, `pathling_sync_syncs_in_flight{target="main"} 0`)
	}, "the completed sync and its end in /metrics")
	for _, want := range []string{
		`pathling_sync_syncs_total{outcome="completed",target="main"} 1`,
		`pathling_sync_pathling_requests_total{kind="kickoff",status_code="401",target="main"} 1`,
		`pathling_sync_pathling_requests_total{kind="kickoff",status_code="202",target="main"} 1`,
		`pathling_sync_pathling_requests_total{kind="token",status_code="200",target="main"} 2`,
		`pathling_sync_pathling_requests_total{kind="poll",status_code="200",target="main"} 1`,
		`pathling_sync_pathling_requests_total{kind="delete",status_code="202",target="main"} 1`,
		`pathling_sync_pathling_requests_total{kind="poll",status_code="202",target="main"} 2`,
		`pathling_sync_sync_polls_count{outcome="completed",target="main"} 1`,
		`pathling_sync_syncs_in_flight{target="main"} 0`,
		`pathling_sync_last_success_timestamp_seconds{target="main"}`,
		`pathling_sync_watermark_age_seconds{target="main"}`,
		`pathling_sync_clock_skew_seconds{target="main"}`,
		`pathling_sync_sync_duration_seconds_bucket{outcome="completed",target="main",le="+Inf"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
			for _, l := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(l, "pathling_sync_") {
					t.Log(l)
				}
			}
		}
	}
	if out := os.Getenv(metricsOutEnv); out != "" {
		if err := os.WriteFile(out, []byte(metrics), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cancel()
	stopped = true
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d", code)
	}

	// Nothing secret in the logs, in any spelling.
	all := logs.String()
	basic := base64.StdEncoding.EncodeToString([]byte(testClientID + ":" + testClientSecret))
	secrets := map[string]string{
		"client secret": testClientSecret, "URL-encoded client secret": url.QueryEscape(testClientSecret),
		"Basic credentials": basic,
	}
	for i, tok := range te.tokens() {
		secrets[fmt.Sprintf("token %d", i+1)] = tok
		// A JWT's signature alone is as good as the token for a replay.
		secrets[fmt.Sprintf("token %d signature", i+1)] = tok[strings.LastIndex(tok, ".")+1:]
	}
	for what, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
	if strings.Contains(all, "Bearer ") {
		t.Errorf("the logs contain an Authorization value")
	}

	// Every line is JSON; the run's lines carry trace and span ids, target,
	// request id and run id.
	recs := jsonLines(t, all)
	var kicked map[string]any
	for _, rec := range recs {
		if rec["msg"] == "kicked off import" {
			kicked = rec
		}
	}
	if kicked == nil {
		t.Fatalf("no \"kicked off import\" line in:\n%s", all)
	}
	for _, k := range []string{"trace_id", "span_id", "target", "request_id", "run_id"} {
		if v, _ := kicked[k].(string); v == "" {
			t.Errorf("log line %v lacks %s", kicked, k)
		}
	}
	if kicked["request_id"] != "auth-1" || kicked["target"] != "main" || len(kicked["trace_id"].(string)) != 32 {
		t.Errorf("log line %v", kicked)
	}
}

// jsonLines parses each line of s as a JSON object, failing on any other line.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, rec)
	}
	return out
}
