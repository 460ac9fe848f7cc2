package pathling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/auth"
	"github.com/pathling-sync/pathling-sync/internal/clock"
)

// fhirJSON is the only media type Pathling accepts in Accept (compared
// exactly: no parameters) and in Content-Type.
const fhirJSON = "application/fhir+json"

// maxBodyBytes caps what is read of any response body.
const maxBodyBytes = 1 << 20

// drainBytes is how much of an unread body is discarded so the connection
// can be reused; beyond that the connection is closed instead.
const drainBytes = 64 << 10

const (
	defaultRequestTimeout = 30 * time.Second
	defaultUserAgent      = "pathling-sync"
)

// ErrInvalidOption is returned (wrapped) by New for a bad option value.
var ErrInvalidOption = errors.New("pathling: invalid option")

// Client talks to one Pathling server's $import-pnp and $job endpoints.
// It is safe for concurrent use. It never retries on its own (except once
// after a 401, with a fresh token): callers decide with Error.Retryable.
type Client struct {
	// kickOffURL is the base URL (as parsed in New) + "/$import-pnp": the
	// client keeps no parsed URL of its own (10,000 targets: 1.4 MB).
	kickOffURL string
	httpClient *http.Client
	tokens     auth.TokenSource
	timeout    time.Duration
	userAgent  string
	clock      clock.Clock // for HTTP-date Retry-After
	// exportStyle is what this Pathling expects in exportUrl.
	exportStyle ExportURLStyle
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient sets the HTTP client. By default each Client has its own
// keep-alive transport with dial and TLS handshake timeouts.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
		}
		c.httpClient = hc
		return nil
	}
}

// WithTokenSource authenticates every request with a bearer token from ts.
func WithTokenSource(ts auth.TokenSource) Option {
	return func(c *Client) error {
		if ts == nil {
			return fmt.Errorf("%w: nil token source", ErrInvalidOption)
		}
		c.tokens = ts
		return nil
	}
}

// WithRequestTimeout bounds each HTTP request (default 30s), even when the
// caller's context has no deadline.
func WithRequestTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("%w: request timeout must be positive, got %s", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// WithUserAgent sets the User-Agent header (default "pathling-sync").
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		if ua == "" {
			return fmt.Errorf("%w: empty user agent", ErrInvalidOption)
		}
		c.userAgent = ua
		return nil
	}
}

// WithExportURLStyle sets what this Pathling expects as exportUrl (default
// ExportURLBase); Client.NormalizeExportURL puts source URLs in that style.
func WithExportURLStyle(style ExportURLStyle) Option {
	return func(c *Client) error {
		if style != ExportURLBase && style != ExportURLEndpoint {
			return fmt.Errorf("%w: unknown export URL style %d", ErrInvalidOption, style)
		}
		c.exportStyle = style
		return nil
	}
}

// New returns a client for the Pathling FHIR base URL baseURL (e.g.
// http://pathling:8080/fhir). It fails if baseURL is not an absolute http(s)
// URL without userinfo, query or fragment, or an option is invalid
// (ErrInvalidOption). It makes no request.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("pathling: base URL is not a URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("pathling: base URL must be an absolute http(s) URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("pathling: base URL must not contain userinfo, a query or a fragment")
	}
	c := &Client{
		kickOffURL: u.String() + kickOffPath,
		timeout:    defaultRequestTimeout,
		userAgent:  defaultUserAgent,
		clock:      clock.System{},
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(c); err != nil {
			return nil, err
		}
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{Transport: newTransport()}
	}
	return c, nil
}

// BaseURL returns the Pathling FHIR base URL the client talks to.
func (c *Client) BaseURL() string { return strings.TrimSuffix(c.kickOffURL, kickOffPath) }

// kickOffPath is the import operation's path below the base URL.
const kickOffPath = "/$import-pnp"

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.MaxIdleConns = 64
	t.MaxIdleConnsPerHost = 16
	t.IdleConnTimeout = 90 * time.Second
	t.ExpectContinueTimeout = time.Second
	return t
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
	date   time.Time // the Date header (the server's clock, whole seconds); zero when absent or unparsable
}

// send performs one logical request: it attaches a token, and after a 401
// invalidates that token and tries once more with a fresh one. It returns the
// last response (a 401 included) or an *Error for transport and token
// problems.
func (c *Client) send(ctx context.Context, op, method, target string, body []byte, header http.Header) (*response, error) {
	for attempt := 0; ; attempt++ {
		var tok string
		if c.tokens != nil {
			var err error
			if tok, err = c.tokens.Token(ctx); err != nil {
				return nil, tokenError(ctx, op, err)
			}
		}
		reqCtx := ctx
		if attempt > 0 {
			reqCtx = context.WithValue(ctx, resendKey{}, attempt)
		}
		resp, err := c.once(reqCtx, op, method, target, body, header, tok)
		if err != nil {
			return nil, err
		}
		if resp.status == http.StatusUnauthorized && c.tokens != nil && attempt == 0 {
			c.tokens.Invalidate(tok)
			continue
		}
		return resp, nil
	}
}

// resendKey marks the context of a request sent again (after a 401): its
// value is how many times the same request was sent before.
type resendKey struct{}

// ResendCount returns how many times the request whose context is ctx was
// sent before (1 for the retry after a 401), 0 for a first send. HTTP
// instrumentation reads it for the http.request.resend_count attribute.
func ResendCount(ctx context.Context) int {
	n, _ := ctx.Value(resendKey{}).(int)
	return n
}

// once sends a single HTTP request under the per-request deadline and reads
// its body (capped), always closing it.
func (c *Client) once(ctx context.Context, op, method, target string, body []byte, header http.Header, tok string) (*response, error) {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(reqCtx, method, target, rd)
	if err != nil {
		return nil, &Error{Op: op, Kind: KindProtocol, Message: "cannot build request", Err: err}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", fhirJSON)
	req.Header.Set("User-Agent", c.userAgent)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, transportError(ctx, op, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
		_ = resp.Body.Close()
	}()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, transportError(ctx, op, err)
	}
	if len(data) > maxBodyBytes {
		return nil, &Error{Op: op, Kind: KindProtocol, HTTPStatus: resp.StatusCode,
			Message: fmt.Sprintf("response body larger than %d bytes", maxBodyBytes)}
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: data}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		r.date = d
	}
	return r, nil
}

// transportError wraps a failure to get a response. It is retryable unless
// the caller's own context ended (then retrying is pointless); a per-request
// timeout is retryable.
func transportError(ctx context.Context, op string, err error) *Error {
	e := &Error{Op: op, Kind: KindUnavailable, Retryable: ctx.Err() == nil, Err: err}
	if ctx.Err() != nil {
		e.Message = "request abandoned"
	} else {
		e.Message = "request failed"
	}
	return e
}

// tokenError wraps a failure to obtain a token: a transient token endpoint
// problem is KindUnavailable (retryable); a refusal is KindUnauthorized. The
// Message carries the token server's own words (RFC 6749 §5.2 error code,
// description, URI), which is what an operator needs to fix a scope or a key;
// auth.Error never holds the assertion, secret or token.
func tokenError(ctx context.Context, op string, err error) *Error {
	msg := "cannot obtain an access token"
	var ae *auth.Error
	isAuth := errors.As(err, &ae)
	if isAuth {
		msg = clip(ae.Reason(), 1000)
	}
	switch {
	case ctx.Err() != nil:
		return &Error{Op: op, Kind: KindUnavailable, Message: "request abandoned while obtaining a token", Err: err}
	case isAuth && ae.Retryable:
		return &Error{Op: op, Kind: KindUnavailable, Retryable: true, Message: msg, Err: err}
	default:
		return &Error{Op: op, Kind: KindUnauthorized, Message: msg, Err: err}
	}
}

// statusError maps the statuses every endpoint shares: 401, 403, 408, 429
// and 5xx. It returns nil for other statuses.
func (c *Client) statusError(op string, r *response) *Error {
	e := &Error{Op: op, HTTPStatus: r.status}
	switch {
	case r.status == http.StatusUnauthorized:
		e.Kind = KindUnauthorized
	case r.status == http.StatusForbidden:
		e.Kind = KindForbidden
	case r.status == http.StatusRequestTimeout || r.status == http.StatusTooManyRequests || r.status >= 500:
		e.Kind, e.Retryable = KindUnavailable, true
		e.RetryAfter = parseRetryAfter(r.header.Get("Retry-After"), c.clock.Now())
	default:
		return nil
	}
	describe(e, r)
	return e
}

// describe fills Outcome and Message from a response body.
func describe(e *Error, r *response) {
	if oo, err := ParseOperationOutcome(r.body); err == nil {
		e.Outcome = oo
		e.Message = oo.Diagnostics()
	}
	if e.Message == "" {
		e.Message = http.StatusText(r.status)
	}
	e.Message = clip(e.Message, 1000)
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
// It returns 0 for none, an unparsable value or a date in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// The methods a sync driver needs; checked here so a signature change is
// noticed in this package first.
var _ interface {
	KickOff(context.Context, ImportRequest) (string, error)
	Status(context.Context, string) (JobStatus, error)
	Delete(context.Context, string) error
} = (*Client)(nil)
