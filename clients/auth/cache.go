package auth

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// token is an access token and when it stops being usable.
type token struct {
	value   string
	expires time.Time
	// refreshAt is when a new token is fetched even though this one is
	// still valid, so callers never hand out a token about to expire.
	refreshAt time.Time
}

// fetchFunc obtains a fresh token from a token endpoint.
type fetchFunc func(ctx context.Context) (token, error)

// minRefreshMargin is the least time before expiry at which a token is renewed.
const minRefreshMargin = 10 * time.Second

// refreshMargin is how long before expiry a token of the given lifetime is
// renewed: max(10s, 10% of the lifetime), but never more than half the
// lifetime, so a token shorter than 20s is still used for a while instead of
// being fetched anew on every call.
func refreshMargin(lifetime time.Duration) time.Duration {
	m := max(minRefreshMargin, lifetime/10)
	return min(m, lifetime/2)
}

// flight is one token fetch that concurrent callers wait on.
type flight struct {
	done chan struct{}
	tok  token
	err  error
}

// cachingSource caches the token fetchFunc returns and runs at most one
// fetch at a time (singleflight).
type cachingSource struct {
	fetch     fetchFunc
	now       func() time.Time
	timeout   time.Duration
	tolerance time.Duration // 0: the default renewal margin

	mu       sync.Mutex
	cached   token
	inflight *flight
}

func newCachingSource(fetch fetchFunc, o options) *cachingSource {
	return &cachingSource{fetch: fetch, now: o.now, timeout: o.requestTimeout, tolerance: o.expiryTolerance}
}

// Token implements TokenSource.
func (c *cachingSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("auth: token: %w", err)
	}
	c.mu.Lock()
	if c.cached.value != "" && c.now().Before(c.cached.refreshAt) {
		v := c.cached.value
		c.mu.Unlock()
		return v, nil
	}
	f := c.inflight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		c.inflight = f
		// The fetch outlives a caller that gives up: others may be waiting on
		// it, and its result is worth caching. It keeps the caller's values
		// (trace context) and is bounded by the request timeout.
		go c.run(context.WithoutCancel(ctx), f)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return "", f.err
		}
		return f.tok.value, nil
	case <-ctx.Done():
		return "", fmt.Errorf("auth: token: %w", ctx.Err())
	}
}

func (c *cachingSource) run(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tok, err := c.fetch(ctx)
	if err == nil && c.tolerance > 0 {
		if lifetime := tok.expires.Sub(c.now()); lifetime < c.tolerance {
			err = &Error{Op: "token", Status: 200, Err: fmt.Errorf("token lifetime %s is shorter than the expiry tolerance %s", lifetime.Round(time.Second), c.tolerance)}
		} else {
			tok.refreshAt = tok.expires.Add(-c.tolerance)
		}
	}

	c.mu.Lock()
	if err == nil {
		c.cached = tok
	}
	c.inflight = nil
	c.mu.Unlock()

	f.tok, f.err = tok, err
	close(f.done)
}

// Invalidate implements TokenSource.
func (c *cachingSource) Invalidate(value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if value != "" && c.cached.value == value {
		c.cached = token{}
	}
}

// newToken computes the expiry and renewal times of a token issued at
// issuedAt that lives for lifetime.
func newToken(value string, issuedAt time.Time, lifetime time.Duration) token {
	expires := issuedAt.Add(lifetime)
	return token{value: value, expires: expires, refreshAt: expires.Add(-refreshMargin(lifetime))}
}
