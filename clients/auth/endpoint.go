package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
)

// maxResponseBytes caps what is read from a token or discovery response.
const maxResponseBytes = 1 << 20

// defaultLifetime is assumed when a token response has no expires_in
// (RFC 6749 makes it optional). A 401 invalidates the token earlier if the
// server's idea differs.
const defaultLifetime = 5 * time.Minute

func newUUID() string { return uuid.NewString() }

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.MaxIdleConnsPerHost = 4
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// tokenResponse is the successful token response of RFC 6749 §5.1.
type tokenResponse struct {
	AccessToken string       `json:"access_token"`
	TokenType   string       `json:"token_type"`
	ExpiresIn   *json.Number `json:"expires_in"`
}

// errorResponse is the error response of RFC 6749 §5.2.
type errorResponse struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorURI         string `json:"error_uri"`
}

// tokenRequest is one POST to a token endpoint.
type tokenRequest struct {
	url       string
	form      url.Values
	basicUser string // client_secret_basic when set
	basicPass string
	// secrets are redacted from anything the server echoes into an error.
	secrets []string
}

// requestToken posts req and returns the token it yields. Errors are *Error.
func requestToken(ctx context.Context, hc *http.Client, now func() time.Time, req tokenRequest) (token, error) {
	issuedAt := now()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, req.url, strings.NewReader(req.form.Encode()))
	if err != nil {
		return token{}, &Error{Op: "token", Err: errors.New("cannot build request")}
	}
	httpReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	httpReq.Header.Set("Accept", "application/json")
	if req.basicUser != "" {
		// RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
		httpReq.SetBasicAuth(url.QueryEscape(req.basicUser), url.QueryEscape(req.basicPass))
	}
	status, body, err := roundTrip(hc, httpReq)
	if err != nil {
		return token{}, &Error{Op: "token", Retryable: true, Err: err}
	}
	if status != http.StatusOK {
		return token{}, endpointError("token", status, body, req.secrets)
	}
	var tr tokenResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&tr); err != nil {
		return token{}, &Error{Op: "token", Status: status, Err: errors.New("malformed token response")}
	}
	if tr.AccessToken == "" {
		return token{}, &Error{Op: "token", Status: status, Err: errors.New("token response has no access_token")}
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return token{}, &Error{Op: "token", Status: status, Err: fmt.Errorf("unsupported token_type %q", sanitize(tr.TokenType, nil))}
	}
	lifetime := defaultLifetime
	if tr.ExpiresIn != nil {
		secs, err := tr.ExpiresIn.Float64()
		if err != nil || secs <= 0 {
			return token{}, &Error{Op: "token", Status: status, Err: errors.New("token response has an invalid expires_in")}
		}
		lifetime = time.Duration(secs * float64(time.Second))
	}
	return newToken(tr.AccessToken, issuedAt, lifetime), nil
}

// roundTrip sends req and reads at most maxResponseBytes of the body. The
// body is always closed.
func roundTrip(hc *http.Client, req *http.Request) (int, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("reading response: %w", err)
	}
	if len(body) > maxResponseBytes {
		return resp.StatusCode, nil, fmt.Errorf("response larger than %d bytes", maxResponseBytes)
	}
	return resp.StatusCode, body, nil
}

// endpointError classifies a non-200 answer: 5xx and 429 are retryable,
// everything else (400 invalid_client, 401, 403, ...) is not.
func endpointError(op string, status int, body []byte, secrets []string) *Error {
	e := &Error{Op: op, Status: status, Retryable: status >= 500 || status == http.StatusTooManyRequests}
	var er errorResponse
	if json.Unmarshal(body, &er) == nil {
		e.Code = sanitize(er.Error, secrets)
		e.Description = sanitize(er.ErrorDescription, secrets)
		e.URI = sanitize(er.ErrorURI, secrets)
	}
	return e
}

// sanitize shortens server-supplied text, drops control characters and
// removes any of our secrets a server might echo back.
func sanitize(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	const maxLen = 200
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return s
}

// checkEndpointURL validates a token or FHIR base URL: absolute http(s), no
// userinfo, no fragment.
func checkEndpointURL(name, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a URL", ErrInvalidConfig, name)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: %s must be an absolute http(s) URL", ErrInvalidConfig, name)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %s must not contain userinfo", ErrInvalidConfig, name)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("%w: %s must not contain a fragment", ErrInvalidConfig, name)
	}
	return u, nil
}
