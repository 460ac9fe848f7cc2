// Package auth provides bearer-token sources for the service's outbound HTTP
// clients: a static token, OAuth 2.0 client credentials with a client secret
// (client_secret_basic), and SMART Backend Services (client credentials with a
// signed JWT assertion, private_key_jwt).
//
// Every source caches its token and fetches a new one shortly before expiry;
// concurrent callers share one in-flight fetch. A token that the server
// rejects (HTTP 401) is dropped with Invalidate.
//
// Secrets, client assertions and tokens never appear in errors.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// TokenSource yields bearer access tokens. Implementations cache and refresh
// before expiry and are safe for concurrent use.
type TokenSource interface {
	// Token returns a valid access token, fetching one if none is cached or
	// the cached one is about to expire. Errors from a token endpoint are
	// *Error; a done ctx returns ctx.Err() wrapped.
	Token(ctx context.Context) (string, error)
	// Invalidate drops a cached token the server rejected (401), so the next
	// Token call fetches a new one. It does nothing if token is not the
	// cached one (another caller already replaced it).
	Invalidate(token string)
}

// ErrInvalidOption is returned (wrapped) by constructors given a bad option value.
var ErrInvalidOption = errors.New("auth: invalid option")

// ErrInvalidConfig is returned (wrapped) by constructors given an unusable config.
var ErrInvalidConfig = errors.New("auth: invalid config")

// Error is a failed token or discovery request. Retryable tells whether the
// same request may succeed later (5xx, 429, network errors) or not (400, 401,
// malformed responses).
type Error struct {
	// Op is what failed: "token" or "discovery".
	Op string
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// Code is the OAuth error code (RFC 6749 §5.2), e.g. "invalid_client".
	Code string
	// Description is the server's error_description, shortened and with any
	// secret of ours removed.
	Description string
	// URI is the server's error_uri, a page about the error, if it sent one.
	URI string
	// Retryable tells whether trying again later may succeed.
	Retryable bool
	// Err is the underlying cause (a network error, a decoding error), if any.
	Err error
}

// Error describes the failure without any secret, assertion or token.
func (e *Error) Error() string {
	msg := "auth: " + e.Op
	if e.Status != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.URI != "" {
		msg += " (" + e.URI + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Reason says for an operator why no token could be had, without the
// "auth:" prefix: the server's refusal as RFC 6749 §5.2 words it
// ("token server refused: invalid_scope: <description> (<error_uri>)"), else
// the HTTP status or the cause. Never a secret, assertion or token.
func (e *Error) Reason() string {
	what := "token server"
	if e.Op == "discovery" {
		what = "SMART configuration discovery"
	}
	var msg string
	switch {
	case e.Code != "":
		msg = what + " refused: " + e.Code
		if e.Description != "" {
			msg += ": " + e.Description
		}
		if e.URI != "" {
			msg += " (" + e.URI + ")"
		}
	case e.Status != 0:
		msg = fmt.Sprintf("%s answered HTTP %d", what, e.Status)
	default:
		msg = what + " failed"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Option configures a token source.
type Option func(*options) error

type options struct {
	httpClient     *http.Client
	now            func() time.Time
	requestTimeout time.Duration
	// expiryTolerance, when set, replaces the default renewal margin.
	expiryTolerance time.Duration
	// newJTI makes the jti of each client assertion; tests replace it to
	// replay an identifier.
	newJTI func() string
}

const defaultRequestTimeout = 30 * time.Second

func buildOptions(opts []Option) (options, error) {
	o := options{
		now:            time.Now,
		requestTimeout: defaultRequestTimeout,
		newJTI:         newUUID,
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	if o.httpClient == nil {
		o.httpClient = &http.Client{Transport: newTransport()}
	}
	return o, nil
}

// WithHTTPClient sets the HTTP client for token and discovery requests. Its
// Timeout, if any, applies on top of WithRequestTimeout.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
		}
		o.httpClient = c
		return nil
	}
}

// WithClock sets the clock used for expiry decisions and assertion
// timestamps. For tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.now = now
		return nil
	}
}

// WithRequestTimeout bounds each token or discovery request (default 30s),
// whether or not the caller's context has a deadline.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: request timeout must be positive, got %s", ErrInvalidOption, d)
		}
		o.requestTimeout = d
		return nil
	}
}

// WithExpiryTolerance renews a cached token once fewer than d remain before
// its expiry, instead of the default margin (max(10 s, 10 % of the lifetime)),
// and refuses a token that lives less than d, as Pathling's
// tokenExpiryTolerance does.
func WithExpiryTolerance(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: expiry tolerance must be positive, got %s", ErrInvalidOption, d)
		}
		o.expiryTolerance = d
		return nil
	}
}

// Static returns a TokenSource that always yields token (e.g. read from a
// file or the environment). Invalidate does nothing: a rejected static token
// stays rejected. An empty token makes Token fail.
func Static(token string) TokenSource { return staticSource(token) }

type staticSource string

// Token implements TokenSource.
func (s staticSource) Token(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("auth: static token is empty")
	}
	return string(s), nil
}

// Invalidate implements TokenSource; a static token cannot be replaced.
func (staticSource) Invalidate(string) {}

var (
	_ TokenSource = staticSource("")
	_ TokenSource = (*cachingSource)(nil)
	_ error       = (*Error)(nil)
)
