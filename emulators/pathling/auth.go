package pathling

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// principal is the authenticated caller of one request.
type principal struct {
	// subject is the JWT "sub"; hasSubject is false when the token had none (Pathling then
	// records the job's owner as empty, and only a token without sub can poll it).
	subject     string
	hasSubject  bool
	authorities []authority
}

// authority is a parsed Pathling authority: "pathling", "pathling:<action>" or
// "pathling:<action>:<subject>".
type authority struct {
	action, subject string
}

func parseAuthority(s string) (authority, bool) {
	parts := strings.Split(s, ":")
	if parts[0] != "pathling" || len(parts) > 3 {
		return authority{}, false
	}
	var a authority
	if len(parts) > 1 {
		if parts[1] == "" {
			return authority{}, false
		}
		a.action = parts[1]
	}
	if len(parts) > 2 {
		if parts[2] == "" {
			return authority{}, false
		}
		a.subject = parts[2]
	}
	return a, true
}

func (a authority) String() string {
	s := "pathling"
	if a.action != "" {
		s += ":" + a.action
	}
	if a.subject != "" {
		s += ":" + a.subject
	}
	return s
}

// subsumedBy reproduces PathlingAuthority.subsumedBy: "pathling" grants everything,
// "pathling:<action>" grants that action on any subject, otherwise both must match.
func (a authority) subsumedBy(other authority) bool {
	switch {
	case other.action == "" && other.subject == "":
		return true
	case other.action == a.action && other.subject == "":
		return true
	default:
		return other.action == a.action && other.subject == a.subject
	}
}

// has reports whether the principal holds the required authority. A nil principal (auth off)
// holds everything.
func (p *principal) has(required string) bool {
	if p == nil {
		return true
	}
	req, ok := parseAuthority(required)
	if !ok {
		return false
	}
	for _, a := range p.authorities {
		if req.subsumedBy(a) {
			return true
		}
	}
	return false
}

// missingAuthority is Pathling's AccessDeniedError text.
func missingAuthority(required string) string {
	return fmt.Sprintf("Missing authority: '%s'", required)
}

// ownerMatches reproduces `job.getOwnerId().equals(currentUserId)` on two Optional<String>.
func ownerMatches(jobOwner string, jobHasOwner bool, p *principal) bool {
	if p == nil {
		return true
	}
	if jobHasOwner != p.hasSubject {
		return false
	}
	return jobOwner == p.subject
}

var errNoToken = errors.New("no bearer token")

// tokenError carries the reason a token was rejected, worded like Spring Security's
// (capitalised, hence not errors.New).
type tokenError string

func (e tokenError) Error() string { return string(e) }

// authenticate validates the request's bearer token. It returns nil, nil when auth is off.
func (e *Emulator) authenticate(r *http.Request) (*principal, error) {
	if e.cfg.Auth == nil {
		return nil, nil
	}
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errNoToken
	}
	return e.validateToken(strings.TrimSpace(token))
}

type pathlingClaims struct {
	Authorities json.RawMessage `json:"authorities"`
}

func (e *Emulator) validateToken(raw string) (*principal, error) {
	a := e.cfg.Auth
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, tokenError("Malformed token")
	}
	keys := a.Keys.Keys
	if len(tok.Headers) > 0 && tok.Headers[0].KeyID != "" {
		keys = a.Keys.Key(tok.Headers[0].KeyID)
	}
	var (
		std    jwt.Claims
		extra  pathlingClaims
		verErr = tokenError("Signed JWT rejected: Another algorithm expected, or no matching key(s) found")
		ok     bool
	)
	for _, k := range keys {
		if err := tok.Claims(k.Public().Key, &std, &extra); err == nil {
			ok = true
			break
		}
	}
	if !ok {
		return nil, verErr
	}
	exp := jwt.Expected{Issuer: a.Issuer, Time: e.cfg.Clock()}
	if a.Audience != "" {
		exp.AnyAudience = jwt.Audience{a.Audience}
	}
	if err := std.ValidateWithLeeway(exp, a.Leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, tokenError("Jwt expired at " + std.Expiry.Time().UTC().Format("2006-01-02T15:04:05Z"))
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return nil, tokenError("The iss claim is not valid")
		case errors.Is(err, jwt.ErrInvalidAudience):
			return nil, tokenError("The required audience is missing")
		default:
			return nil, tokenError(err.Error())
		}
	}
	p := &principal{subject: std.Subject, hasSubject: std.Subject != ""}
	for _, s := range authorityStrings(extra.Authorities) {
		if a, ok := parseAuthority(s); ok {
			p.authorities = append(p.authorities, a)
		}
	}
	return p, nil
}

// authorityStrings accepts the claim as a JSON array or a space-separated string, as Spring's
// JwtGrantedAuthoritiesConverter does.
func authorityStrings(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.Fields(s)
	}
	return nil
}

// writeUnauthorized answers like Spring Security's BearerTokenAuthenticationEntryPoint, which
// rejects the request before it reaches HAPI: 401, a WWW-Authenticate challenge, empty body.
func writeUnauthorized(w http.ResponseWriter, err error) {
	if errors.Is(err, errNoToken) {
		w.Header().Set("WWW-Authenticate", "Bearer")
	} else {
		desc := strings.ReplaceAll("An error occurred while attempting to decode the Jwt: "+err.Error(), `"`, `'`)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer error="invalid_token", error_description="%s", error_uri="https://tools.ietf.org/html/rfc6750#section-3.1"`, desc))
	}
	w.WriteHeader(http.StatusUnauthorized)
}
