package pathling

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/clock"
)

// recorded is a request the fake server received.
type recorded struct {
	method     string
	requestURI string // as on the wire: shows whether '$' was escaped
	header     http.Header
	body       []byte
}

// fakeServer is an httptest server on 127.0.0.1 that records requests and
// counts connections (to check keep-alive).
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []recorded
	newConns atomic.Int64
}

// newFakeServer serves handle; n counts requests from 1.
func newFakeServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) *fakeServer {
	t.Helper()
	fs := &fakeServer{}
	fs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.reqs = append(fs.reqs, recorded{method: r.Method, requestURI: r.RequestURI, header: r.Header.Clone(), body: body})
		n := len(fs.reqs)
		fs.mu.Unlock()
		handle(w, r, n)
	}))
	fs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			fs.newConns.Add(1)
		}
	}
	fs.Start()
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fakeServer) requests() []recorded {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]recorded(nil), fs.reqs...)
}

func (fs *fakeServer) request(t *testing.T, i int) recorded {
	t.Helper()
	reqs := fs.requests()
	if i >= len(reqs) {
		t.Fatalf("request %d not received (got %d)", i, len(reqs))
	}
	return reqs[i]
}

// fakeTokens is a TokenSource handing out t1, t2, ... and recording
// invalidations.
type fakeTokens struct {
	mu          sync.Mutex
	issued      int
	current     string
	invalidated []string
	err         error
}

func (f *fakeTokens) Token(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	if f.current == "" {
		f.issued++
		f.current = fmt.Sprintf("t%d", f.issued)
	}
	return f.current, nil
}

func (f *fakeTokens) Invalidate(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, tok)
	if tok == f.current {
		f.current = ""
	}
}

func newClient(t *testing.T, base string, opts ...Option) *Client {
	t.Helper()
	c, err := New(base, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withClock fixes the client's clock (for HTTP-date Retry-After).
func withClock(now time.Time) Option {
	return func(c *Client) error { c.clock = clock.Func(func() time.Time { return now }); return nil }
}

const (
	acceptedOutcome   = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job accepted for processing, see the Content-Location header for the URL at which status can be queried"}]}`
	processingOutcome = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job currently processing"}]}`
)

func errorOutcome(code, diagnostics string) string {
	return fmt.Sprintf(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":%q,"diagnostics":%q}]}`, code, diagnostics)
}

func writeFHIR(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/fhir+json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
