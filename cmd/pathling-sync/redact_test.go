package main

import (
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// The service with a static bearer token (target main) and an OAuth2 client
// secret (target other), asked to sync from export URLs carrying
// credentials: no outcome event, log line, status or events output, or
// /metrics line holds a secret. It also says at start-up, at Error level and
// in a gauge, that its redis-server (the tests' has no persistence) loses its
// data on a restart.
func TestNoSecretInEventsLogsStatusOrMetrics(t *testing.T) {
	const (
		staticToken = "static-s3cret-bearer" //nolint:gosec // test secret
		urlPassword = "s3cret-pw"            //nolint:gosec // test secret
		urlToken    = "s3cret-q"             //nolint:gosec // test secret
	)
	e := newOpsEnv(t)
	te := newTokenEndpoint(t)
	tokenSrv := httptest.NewServer(te)
	t.Cleanup(tokenSrv.Close)
	emuSrv := httptest.NewServer(e.emu)
	t.Cleanup(emuSrv.Close)
	yaml := fmt.Sprintf(`
nats:
  url: %[1]s
redis:
  url: %[2]s
admin:
  addr: 127.0.0.1:0
log:
  level: debug
  format: json
targets:
  main:
    pathling:
      url: %[3]s/fhir
      auth:
        type: bearer
        token: %[4]s
    defaults:
      exportUrl: %[5]s
    poll: {initial: 20ms, max: 100ms}
  other:
    pathling:
      url: %[3]s/fhir
      auth:
        type: client_credentials
        tokenUrl: %[6]s/token
        clientId: %[7]s
        clientSecret: %[8]s
    defaults:
      exportUrl: %[5]s
    poll: {initial: 20ms, max: 100ms}
`, e.natsURL, e.redisURL, emuSrv.URL, staticToken, okSource, tokenSrv.URL, testClientID, testClientSecret)
	if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	e.serve()

	var outputs []string // everything the commands printed
	cli := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, errOut := e.cli(args...)
		if code != wantCode {
			t.Fatalf("%v: exit %d, want %d\n%s\n%s\nservice logs:\n%s", args, code, wantCode, out, errOut, e.logs.String())
		}
		outputs = append(outputs, out, errOut)
		return out
	}
	cli(0, "request", "--wait", "--wait-timeout", "1m", "--target", "main", "--id", "ok-main")
	cli(0, "request", "--wait", "--wait-timeout", "1m", "--target", "other", "--id", "ok-other")
	// The request command refuses such a URL itself ...
	cli(exitUsage, "request", "--target", "main", "--id", "bad-0", "--export-url", "http://user:"+urlPassword+"@source.test/fhir")
	// ... other publishers may not.
	// (One per target: e.outcome sees the target's last outcome.)
	bad := map[string]string{
		"main":  "http://user:" + urlPassword + "@source.test/fhir",
		"other": okSource + "?_token=" + urlToken,
	}
	for target, u := range bad {
		e.publish(target, "bad-"+target, messages.SyncRequested{ExportURL: u})
	}
	for target, u := range bad {
		id := "bad-" + target
		var body []byte
		testenv.Eventually(t, 30*time.Second, func() bool {
			kind, b, ok := e.outcome(target, id)
			body = b
			return ok && kind == "failed"
		}, "SyncFailed of %s", id)
		if want := `"exportUrl":"` + messages.RedactURL(u) + `"`; !strings.Contains(string(body), want) {
			t.Errorf("%s: SyncFailed %s lacks %s", id, body, want)
		}
	}
	cli(0, "status")
	cli(0, "status", "--json")
	cli(0, "events")
	cli(0, "events", "--json")

	var adminAddr string
	for _, rec := range jsonLines(t, e.logs.String()) {
		if rec["msg"] == "pathling-sync serving" {
			adminAddr, _ = rec["admin"].(string)
		}
	}
	code, metrics := get(t, "http://"+adminAddr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	if !strings.Contains(metrics, "\npathling_sync_redis_persistence_enabled 0\n") &&
		!strings.Contains(metrics, "\npathling_sync_redis_persistence_enabled{") {
		t.Errorf("/metrics lacks pathling_sync_redis_persistence_enabled 0")
	}
	persistenceErrors := 0
	for _, rec := range jsonLines(t, e.logs.String()) {
		if rec["level"] == "ERROR" && strings.HasPrefix(fmt.Sprint(rec["msg"]), "Redis runs without persistence") {
			persistenceErrors++
		}
	}
	if persistenceErrors != 1 {
		t.Errorf("%d Error lines about Redis persistence, want 1", persistenceErrors)
	}

	// Every outcome event in the stream (requests are the requesters' own).
	var events []string
	for seq := uint64(1); seq <= e.lastSeq(); seq++ {
		m := e.msg(seq)
		if strings.HasPrefix(m.Subject, "pathling.sync.requested.") {
			continue
		}
		events = append(events, fmt.Sprint(m.Subject, m.Header, string(m.Data)))
	}
	if len(events) < 4 {
		t.Fatalf("%d outcome events, want 4", len(events))
	}

	secrets := map[string]string{
		"static bearer token": staticToken, "client secret": testClientSecret, "export URL password": urlPassword,
		"export URL token":  urlToken,
		"Basic credentials": base64.StdEncoding.EncodeToString([]byte(testClientID + ":" + testClientSecret)),
	}
	for i, tok := range te.tokens() {
		secrets[fmt.Sprintf("issued token %d", i+1)] = tok
	}
	places := map[string]string{
		"logs": e.logs.String(), "command outputs": strings.Join(outputs, "\n"), "/metrics": metrics,
		"outcome events": strings.Join(events, "\n"),
	}
	for where, text := range places {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("the %s contain the %s", where, what)
			}
		}
		if strings.Contains(text, "Bearer ") {
			t.Errorf("the %s contain an Authorization value", where)
		}
	}
}
