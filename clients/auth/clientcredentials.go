package auth

import (
	"context"
	"fmt"
	"net/url"
)

// ClientCredentialsConfig configures the OAuth 2.0 client credentials grant
// with a client secret sent as HTTP Basic (client_secret_basic).
type ClientCredentialsConfig struct {
	ClientID     string
	ClientSecret string
	// TokenURL is the token endpoint, an absolute http(s) URL.
	TokenURL string
	// Scope is sent when not empty (space-separated scopes).
	Scope string
}

// NewClientCredentials returns a caching TokenSource that obtains tokens with
// the client credentials grant. It fails (ErrInvalidConfig, ErrInvalidOption)
// on an incomplete config or a bad option; it makes no request. Token returns
// *Error when the token endpoint refuses or cannot be reached.
func NewClientCredentials(cfg ClientCredentialsConfig, opts ...Option) (TokenSource, error) {
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("%w: client credentials: ClientID is required", ErrInvalidConfig)
	}
	if cfg.ClientSecret == "" {
		return nil, fmt.Errorf("%w: client credentials: ClientSecret is required", ErrInvalidConfig)
	}
	if _, err := checkEndpointURL("TokenURL", cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("client credentials: %w", err)
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	fetch := func(ctx context.Context) (token, error) {
		form := url.Values{"grant_type": {"client_credentials"}}
		if cfg.Scope != "" {
			form.Set("scope", cfg.Scope)
		}
		return requestToken(ctx, o.httpClient, o.now, tokenRequest{
			url:       cfg.TokenURL,
			form:      form,
			basicUser: cfg.ClientID,
			basicPass: cfg.ClientSecret,
			secrets:   []string{cfg.ClientSecret, url.QueryEscape(cfg.ClientSecret)},
		})
	}
	return newCachingSource(fetch, o), nil
}
