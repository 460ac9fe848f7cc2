package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	pathlingclient "github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/emulators/source"
)

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--mode", "scripted", "--allow-export-url", "http://127.0.0.1:1/fhir"},
			noEnv, io.Discard, func(addr string) { addrc <- addr })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("emulator did not start")
	}

	reqCtx, reqCancel := context.WithTimeout(ctx, 5*time.Second)
	defer reqCancel()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, "http://"+addr+"/fhir/metadata", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"import-pnp"`) {
		t.Fatalf("metadata: %d %s", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("emulator did not stop")
	}
}

func TestRunRejectsBadMode(t *testing.T) {
	err := run(context.Background(), []string{"--mode", "bogus"}, noEnv, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown mode") {
		t.Fatalf("want unknown mode error, got %v", err)
	}
}

func noEnv(string) string { return "" }

// startEmulator runs the command with args and env until the test ends and returns its
// FHIR base.
func startEmulator(t *testing.T, args []string, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", "127.0.0.1:0", "--poll-interval", "10ms"}, args...),
			func(k string) string { return env[k] }, io.Discard, func(addr string) { addrc <- addr })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-addrc:
		return "http://" + addr + "/fhir"
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("emulator did not start")
	}
	return ""
}

// importOnce kicks off an import of exportURL and polls it to its end.
func importOnce(t *testing.T, base, exportURL string) pathlingclient.JobStatus {
	t.Helper()
	c, err := pathlingclient.New(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	statusURL, err := c.KickOff(ctx, pathlingclient.ImportRequest{ExportURL: exportURL, SaveMode: "merge"})
	if err != nil {
		t.Fatalf("kick-off: %v", err)
	}
	for {
		st, err := c.Status(ctx, statusURL)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if st.State != pathlingclient.StateRunning {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatal("job did not finish")
		case <-time.After(10 * time.Millisecond): // poll cadence
		}
	}
}

// The emulator pulls from a source that requires SMART Backend Services, configured with
// Pathling's own pathling.import.pnp.* settings (flags, or Spring's environment variables);
// a key the source does not know fails the job with the token server's reason.
func TestPullFromSecuredSource(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "pathling-1", Algorithm: "RS384", Use: "sig"}
	src, err := source.New(source.Config{Seed: 2, Patients: 3, RetryAfter: -1, Auth: &source.AuthConfig{
		Clients: map[string]jose.JSONWebKeySet{"pathling": {Keys: []jose.JSONWebKey{jwk.Public()}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	ss := httptest.NewServer(src)
	t.Cleanup(ss.Close)
	exportURL := ss.URL + "/fhir"

	t.Run("registered key pulls", func(t *testing.T) {
		priv, err := jwk.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(t.TempDir(), "pathling.jwk")
		if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
			t.Fatal(err)
		}
		base := startEmulator(t, []string{
			"--allow-export-url", exportURL,
			"--pathling.import.pnp.clientId=pathling", "--pnp-private-key-jwk-file", keyFile,
			"--pathling.import.pnp.scope=system/*.read",
		}, nil)
		st := importOnce(t, base, exportURL)
		if st.State != pathlingclient.StateDone || st.Result == nil || len(st.Result.Outputs) == 0 {
			t.Fatalf("import from the secured source: %+v (failure %v)", st, st.Failure)
		}
		if n := src.Counters().TokensIssued; n == 0 {
			t.Error("no token was issued: the source was not asked for one")
		}
	})

	t.Run("unknown key fails with the token server's reason", func(t *testing.T) {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		wrong, err := jose.JSONWebKey{Key: other, KeyID: "pathling-1", Algorithm: "RS384", Use: "sig"}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		base := startEmulator(t, []string{"--allow-export-url", exportURL}, map[string]string{
			"PATHLING_IMPORT_PNP_CLIENTID":      "pathling",
			"PATHLING_IMPORT_PNP_PRIVATEKEYJWK": string(wrong),
			"PATHLING_IMPORT_PNP_SCOPE":         "system/*.read",
		})
		st := importOnce(t, base, exportURL)
		const want = `Ping and pull import failed: Cannot obtain an access token for the source: token server refused: invalid_client: client_assertion signature does not match a registered key of client "pathling"`
		if st.State != pathlingclient.StateFailed || st.Failure == nil || st.Failure.HTTPStatus != http.StatusBadRequest {
			t.Fatalf("want a failed job (400), got %+v", st)
		}
		if got := st.Failure.Outcome.Diagnostics(); got != want {
			t.Errorf("diagnostics %q\nwant        %q", got, want)
		}
		if strings.Contains(st.Failure.Outcome.Diagnostics(), "eyJ") {
			t.Error("the failure leaks the client assertion")
		}
	})
}

func TestSourceAuthSettings(t *testing.T) {
	// A flag wins over the variable; tokenExpiryTolerance is seconds.
	err := run(context.Background(), []string{"--pathling.import.pnp.clientId=x", "--pathling.import.pnp.clientSecret=s"},
		func(k string) string {
			return map[string]string{"PATHLING_IMPORT_PNP_CLIENTID": "y", "PATHLING_IMPORT_PNP_TOKENEXPIRYTOLERANCE": "soon"}[k]
		}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "tokenExpiryTolerance") {
		t.Fatalf("bad tolerance: %v", err)
	}
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--pathling.import.pnp.clientId=x"}, noEnv, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "privateKeyJwk or clientSecret") {
		t.Fatalf("client id alone: %v", err)
	}
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0"}, func(k string) string {
		return map[string]string{"PATHLING_IMPORT_PNP_CLIENTID": "x", "PATHLING_IMPORT_PNP_PRIVATEKEYJWK": `{"kty":"oct","k":"c2VjcmV0"}`}[k]
	}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "pathling.import.pnp") || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("unusable key: %v", err)
	}
}
