package config

import (
	"log/slog"
	"strings"
)

// redacted is what a secret prints as.
const redacted = "[redacted]"

// Secret is a configuration value that must never be printed: a password, a
// token, a client secret, a private key. String, GoString, MarshalText and
// LogValue print "[redacted]" (or "" when the secret is empty, so a log still
// shows whether it is set), so a logged or marshalled Config never leaks it.
// Reveal returns the value for the one place that needs it.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString makes %#v print the redacted form too.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText makes encoding/json, yaml and slog's JSON handler print the
// redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// SecretURL is a URL, or a comma-separated list of URLs, that may carry
// credentials in its user info (redis://user:password@host,
// nats://token@host). It prints with the password (or a lone token) replaced
// by "xxxxx"; Reveal returns the value.
type SecretURL string

// Reveal returns the URL with its credentials.
func (u SecretURL) Reveal() string { return string(u) }

// String returns the URL(s) with credentials masked.
func (u SecretURL) String() string { return redactURLs(string(u)) }

// GoString makes %#v print the masked form too.
func (u SecretURL) GoString() string { return `config.SecretURL("` + u.String() + `")` }

// MarshalText prints the masked form.
func (u SecretURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// LogValue implements slog.LogValuer.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// redactURLs masks the user info of every comma-separated URL in s. It works
// on text, not on a parsed URL, so that even a URL that does not parse cannot
// leak its password.
func redactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactURL(p)
	}
	return strings.Join(parts, ",")
}

func redactURL(s string) string {
	start := 0
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	end := len(s)
	if j := strings.IndexAny(s[start:], "/?#"); j >= 0 {
		end = start + j
	}
	at := strings.LastIndex(s[start:end], "@")
	if at < 0 {
		return s
	}
	userinfo := s[start : start+at]
	masked := "xxxxx"
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		// user:password: the user name is not a secret. A lone user info
		// (nats://token@host) is a token and is masked whole.
		masked = user + ":xxxxx"
	}
	return s[:start] + masked + s[start+at:]
}
