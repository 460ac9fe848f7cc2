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
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// headers are the request header templates for userAgent (shared by
	// all clients with the default one: 10,000 targets hold no copies).
	headers *requestHeaders
	clock   clock.Clock // for HTTP-date Retry-After
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
	c.headers = defaultHeaders
	if c.userAgent != defaultUserAgent {
		c.headers = newRequestHeaders(c.userAgent)
	}
	return c, nil
}

// requestHeaders are the constant headers of each kind of request, cloned
// for each request (one map and one value array) rather than built one Set
// at a time. They are never modified after newRequestHeaders.
type requestHeaders struct {
	get  http.Header // GET and DELETE
	post http.Header // the kick-off
}

func newRequestHeaders(userAgent string) *requestHeaders {
	return &requestHeaders{
		get: http.Header{"Accept": {fhirJSON}, "User-Agent": {userAgent}},
		post: http.Header{"Accept": {fhirJSON}, "User-Agent": {userAgent},
			"Content-Type": {fhirJSON}, "Prefer": {"respond-async"}},
	}
}

// defaultHeaders are the templates for the default user agent; read only.
var defaultHeaders = newRequestHeaders(defaultUserAgent)

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

// response is a fully read HTTP response. Its body is a pooled buffer:
// callers release it once done with the body (whatever they keep of it, the
// JSON decoding has copied).
type response struct {
	status int
	header http.Header
	body   []byte
	date   time.Time // the Date header (the server's clock, whole seconds); zero when absent or unparsable
	buf    *[]byte   // body's pooled buffer
}

// release returns the body's buffer to the pool; r.body is unusable after.
func (r *response) release() {
	if r.buf == nil {
		return
	}
	if cap(*r.buf) <= maxPooledBody {
		*r.buf = (*r.buf)[:0]
		bodyBuffers.Put(r.buf)
	}
	r.buf, r.body = nil, nil
}

// bodyBuffers holds read buffers for response bodies, so that each response
// (all of Pathling's answers are small) is read without allocating. A pool
// holds no state anyone can observe: it only recycles free memory.
var bodyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, initialBodyBuffer)
	return &b
}}

const (
	// initialBodyBuffer fits Pathling's OperationOutcomes and import results.
	initialBodyBuffer = 2 << 10
	// maxPooledBody: a buffer grown larger by an unusual body goes to the
	// GC rather than being kept for small ones.
	maxPooledBody = 64 << 10
)

// send performs one logical request: it attaches a token, and after a 401
// invalidates that token and tries once more with a fresh one. It returns the
// last response (a 401 included) or an *Error for transport and token
// problems. target must have come from url.Parse and stays the caller's;
// header is one of c.headers' templates (cloned, never modified).
func (c *Client) send(ctx context.Context, op, method string, target *url.URL, body []byte, header http.Header) (response, error) {
	for attempt := 0; ; attempt++ {
		var tok string
		if c.tokens != nil {
			var err error
			if tok, err = c.tokens.Token(ctx); err != nil {
				return response{}, tokenError(ctx, op, err)
			}
		}
		reqCtx := ctx
		if attempt > 0 {
			reqCtx = context.WithValue(ctx, resendKey{}, attempt)
		}
		resp, err := c.once(reqCtx, op, method, target, body, header, tok)
		if err != nil {
			return response{}, err
		}
		if resp.status == http.StatusUnauthorized && c.tokens != nil && attempt == 0 {
			resp.release()
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

// parseTarget parses a request URL as http.NewRequest does, so that it is
// parsed once per call.
func parseTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	removeEmptyPort(u)
	return u, nil
}

// removeEmptyPort drops an empty port ("host:") as http.NewRequest does.
func removeEmptyPort(u *url.URL) {
	if strings.LastIndex(u.Host, ":") > strings.LastIndex(u.Host, "]") {
		u.Host = strings.TrimSuffix(u.Host, ":")
	}
}

// newRequest builds the request http.NewRequestWithContext would for an
// already parsed URL, with a clone of the header template.
func newRequest(ctx context.Context, method string, u *url.URL, body []byte, header http.Header, tok string) *http.Request {
	h := header.Clone()
	if tok != "" {
		h["Authorization"] = []string{"Bearer " + tok}
	}
	req := http.Request{Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Host: u.Host}
	if body != nil {
		// A NopCloser'd *bytes.Reader, as NewRequest makes: the transport
		// recognises it as in memory and sends headers and body together.
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		if len(body) == 0 {
			req.Body, req.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
		}
	}
	return req.WithContext(ctx)
}

// once sends a single HTTP request under the per-request deadline and reads
// its body (capped), always closing it.
func (c *Client) once(ctx context.Context, op, method string, target *url.URL, body []byte, header http.Header, tok string) (response, error) {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.httpClient.Do(newRequest(reqCtx, method, target, body, header, tok))
	if err != nil {
		return response{}, transportError(ctx, op, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header}
	eof := false
	defer func() {
		if !eof { // a body read to its end needs no draining
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
		}
		_ = resp.Body.Close()
	}()
	r.buf = bodyBuffers.Get().(*[]byte)
	*r.buf, eof, err = readBody((*r.buf)[:0], resp.Body, maxBodyBytes+1)
	r.body = *r.buf
	if err != nil {
		r.release()
		return response{}, transportError(ctx, op, err)
	}
	if len(r.body) > maxBodyBytes {
		r.release()
		return response{}, &Error{Op: op, Kind: KindProtocol, HTTPStatus: resp.StatusCode,
			Message: fmt.Sprintf("response body larger than %d bytes", maxBodyBytes)}
	}
	r.date = parseHTTPDate(resp.Header.Get("Date"))
	return r, nil
}

// readBody appends at most limit bytes of rd to buf, as
// io.ReadAll(io.LimitReader(rd, limit)) would. eof tells whether rd's end
// was reached.
func readBody(buf []byte, rd io.Reader, limit int) (_ []byte, eof bool, _ error) {
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := rd.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
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
func (c *Client) statusError(op string, r response) *Error {
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
func describe(e *Error, r response) {
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

// parseHTTPDate parses a Date header as http.ParseTime does, zero when it
// fails. The IMF-fixdate every server sends is read without time.Parse,
// which allocates a "GMT" zone for each value; the time is then in UTC (the
// same instant).
func parseHTTPDate(v string) time.Time {
	if t, ok := parseIMFFixdate(v); ok {
		return t
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// parseIMFFixdate reads "Mon, 02 Jan 2006 15:04:05 GMT" (http.TimeFormat);
// false for anything else, including out-of-range fields (which
// http.ParseTime then rejects).
func parseIMFFixdate(v string) (time.Time, bool) {
	// Mon, 02 Jan 2006 15:04:05 GMT
	// 0123456789012345678901234567
	if len(v) != len(http.TimeFormat) || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
		v[16] != ' ' || v[19] != ':' || v[22] != ':' || v[25:] != " GMT" {
		return time.Time{}, false
	}
	if !slices.Contains(weekdays, v[:3]) {
		return time.Time{}, false
	}
	month := slices.Index(months, v[8:11])
	day, ok1 := digits(v[5:7])
	year, ok2 := digits(v[12:16])
	hour, ok3 := digits(v[17:19])
	minute, ok4 := digits(v[20:22])
	sec, ok5 := digits(v[23:25])
	if month < 0 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || hour > 23 || minute > 59 || sec > 59 || day < 1 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month+1), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day { // beyond the month's last day: time.Date moved it on
		return time.Time{}, false
	}
	return t, true
}

var (
	weekdays = []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
	months   = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// digits parses a run of ASCII digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}
