package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// start runs the command on a free loopback port and returns its FHIR base URL and a stop
// function that returns run's error.
func start(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", "127.0.0.1:0", "--log-level", "error"}, args...), w, io.Discard)
		_ = w.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	var base string
	select {
	case line := <-lines:
		m := regexp.MustCompile(`FHIR base (http://\S+/fhir)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected output %q", line)
		}
		base = m[1]
	case err := <-done:
		t.Fatalf("run exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no listening line within 10s")
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = errors.New("run did not return after cancel")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return base, stop
}

func get(t *testing.T, url string, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestRunServesExportsAndShutsDown(t *testing.T) {
	base, stop := start(t, "--patients", "3", "--export-polls", "1", "--resources-per-file", "2")
	status, hdr, body := get(t, base+"/$export?_type=Patient", http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}})
	if status != http.StatusAccepted {
		t.Fatalf("kick-off: %d %s", status, body)
	}
	statusURL := hdr.Get("Content-Location")
	if status, hdr, _ := get(t, statusURL, nil); status != http.StatusAccepted || hdr.Get("Retry-After") != "1" {
		t.Fatalf("first poll: %d %v", status, hdr)
	}
	status, _, body = get(t, statusURL, nil)
	if status != http.StatusOK {
		t.Fatalf("second poll: %d %s", status, body)
	}
	var m struct {
		Output []struct {
			Type  string
			URL   string
			Count int
		}
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Output) != 2 || m.Output[0].Count+m.Output[1].Count != 3 {
		t.Fatalf("manifest %s", body)
	}
	if status, _, body := get(t, m.Output[1].URL, nil); status != 200 || strings.Count(string(body), "\n") != 1 {
		t.Fatalf("file: %d %q", status, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
}

func TestRunWithAuthClients(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "ES384"}
	b, err := json.Marshal(map[string]jose.JSONWebKeySet{"pathling": {Keys: []jose.JSONWebKey{pub}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	base, _ := start(t, "--auth-clients", path)
	if status, _, _ := get(t, base+"/$export", http.Header{"Prefer": {"respond-async"}}); status != http.StatusUnauthorized {
		t.Fatalf("kick-off without token: %d", status)
	}
	if status, _, body := get(t, base+"/.well-known/smart-configuration", nil); status != 200 || !strings.Contains(string(body), "/auth/token") {
		t.Fatalf("smart-configuration: %d %s", status, body)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"--log-level", "loud"}, {"--export-polls", "-1"}, {"--auth-clients", "/does/not/exist"}, {"extra"}} {
		if err := run(context.Background(), args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("run(%v) = %v, want a usage error", args, err)
		}
	}
}

// The fault suite skews the source's clock against the service's (docs/reliability.md).
func TestRunClockOffsetMovesTransactionTime(t *testing.T) {
	base, _ := start(t, "--patients", "1", "--clock-offset", "-10m")
	status, hdr, body := get(t, base+"/$export?_type=Patient", http.Header{"Prefer": {"respond-async"}})
	if status != http.StatusAccepted {
		t.Fatalf("kick-off: %d %s", status, body)
	}
	statusURL := hdr.Get("Content-Location")
	var m struct{ TransactionTime time.Time }
	testDeadline := time.Now().Add(10 * time.Second)
	for {
		status, _, body = get(t, statusURL, nil)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(testDeadline) {
			t.Fatalf("export not done within 10s: %d %s", status, body)
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest %s: %v", body, err)
	}
	if skew := time.Since(m.TransactionTime); skew < 9*time.Minute || skew > 11*time.Minute {
		t.Fatalf("transactionTime %s is %s behind the real clock, want about 10m", m.TransactionTime, skew)
	}
}
