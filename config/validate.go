package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Validate checks the whole configuration and returns every problem as
// Errors (nil when there is none). Messages name the key
// ("targets.default.pathling.url: required") and never contain a secret.
// It reads no file: Load has read the secret files already.
func (c *Config) Validate() error {
	var errs Errors
	c.validateNATS(&errs)
	c.validateRedis(&errs)
	if _, _, err := net.SplitHostPort(c.Admin.Addr); err != nil {
		errs.add("admin.addr", fmt.Sprintf("%q is not host:port (e.g. :9464, 127.0.0.1:9464)", c.Admin.Addr))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Log.Level)); err != nil {
		errs.add("log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level))
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs.add("log.format", fmt.Sprintf("%q is not json or text", c.Log.Format))
	}
	s := c.Service
	required(&errs, "service.source", s.Source)
	required(&errs, "service.instanceId", s.InstanceID)
	positive(&errs, "service.queueRetry", s.QueueRetry)
	notNegative(&errs, "service.shutdownGrace", s.ShutdownGrace)

	c.validateChains(&errs)

	// Two targets must not share an environment variable ("prod" and "PROD",
	// or "x" and "x_defaults": X_DEFAULTS_TIMEOUT would set both).
	names := c.TargetNames()
	for _, name := range names {
		t := c.Targets[name]
		t.Name = name
		t.validate(&errs)
	}
	envOwner := map[string]string{}
	reported := map[[2]string]bool{}
	for _, name := range envSharingCandidates(names) {
		prefix := EnvPrefix + "TARGETS_" + envToken(name) + "_"
		for _, l := range leavesOf(reflect.TypeFor[TargetConfig]()) {
			v := prefix + l.env
			other, ok := envOwner[v]
			if !ok {
				envOwner[v] = name
				continue
			}
			if pair := [2]string{other, name}; !reported[pair] {
				reported[pair] = true
				errs.add("targets."+name, fmt.Sprintf("targets %q and %q share the environment variable %s; rename one", other, name, v))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func (c *Config) validateNATS(errs *Errors) {
	n := c.NATS
	n.validateAddress(errs)
	st := n.Stream
	positive(errs, "nats.stream.maxAge", st.MaxAge)
	positive(errs, "nats.stream.duplicates", st.Duplicates)
	if st.MaxAge > 0 && st.Duplicates > st.MaxAge {
		errs.add("nats.stream.duplicates", fmt.Sprintf("%s is longer than nats.stream.maxAge %s", formatDuration(st.Duplicates), formatDuration(st.MaxAge)))
	}
	if st.Replicas < 1 || st.Replicas > 5 {
		errs.add("nats.stream.replicas", fmt.Sprintf("%d is not between 1 and 5", st.Replicas))
	}
	if st.MaxBytes < 0 {
		errs.add("nats.stream.maxBytes", "must not be negative (0: unlimited)")
	}

	co := n.Consumer
	if co.Durable == "" {
		errs.add("nats.consumer.durable", "required")
	} else if strings.ContainsAny(co.Durable, " \t\r\n.*>/\\") {
		errs.add("nats.consumer.durable", fmt.Sprintf("%q must not contain white space, '.', '*', '>', '/' or '\\'", co.Durable))
	}
	if co.AckWait < 300*time.Millisecond {
		// InProgress goes out every third of it: below this heartbeats flood the server.
		errs.add("nats.consumer.ackWait", fmt.Sprintf("%s is shorter than 300ms", formatDuration(co.AckWait)))
	}
	if co.MaxDeliver == 0 || co.MaxDeliver < -1 {
		errs.add("nats.consumer.maxDeliver", fmt.Sprintf("%d is neither -1 (unlimited) nor positive", co.MaxDeliver))
	}
	if co.MaxWorkers < 1 {
		errs.add("nats.consumer.maxWorkers", fmt.Sprintf("%d is not positive", co.MaxWorkers))
	}
	switch {
	case co.MaxAckPending == 0 || co.MaxAckPending < -1:
		errs.add("nats.consumer.maxAckPending", fmt.Sprintf("%d is neither -1 (unlimited) nor positive", co.MaxAckPending))
	case co.MaxAckPending > 0 && co.MaxAckPending < co.MaxWorkers:
		errs.add("nats.consumer.maxAckPending", fmt.Sprintf("%d is below nats.consumer.maxWorkers %d", co.MaxAckPending, co.MaxWorkers))
	}
}

// validateAddress checks what every user of the stream needs, the client
// commands included: the connection (URL, credentials, TLS), the stream's
// name and the subject prefix.
func (n NATSConfig) validateAddress(errs *Errors) {
	if n.URL == "" {
		errs.add("nats.url", "required")
	}
	for u := range strings.SplitSeq(n.URL.Reveal(), ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
			errs.add("nats.url", fmt.Sprintf("%q is not a nats://, tls://, ws:// or wss:// URL", redactURL(u)))
		}
	}
	methods := 0
	for _, set := range []bool{n.CredsFile != "", n.NKeySeedFile != "", n.User != "", n.Token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		errs.add("nats", "credsFile, nkeySeedFile, user and token are alternatives: set only one")
	}
	if n.Password != "" && n.User == "" {
		errs.add("nats.user", "required with nats.password")
	}
	validateTLS(errs, "nats.tls", n.TLS)

	st := n.Stream
	if st.Name == "" {
		errs.add("nats.stream.name", "required")
	} else if strings.ContainsAny(st.Name, " \t\r\n.*>/\\") {
		errs.add("nats.stream.name", fmt.Sprintf("%q must not contain white space, '.', '*', '>', '/' or '\\'", st.Name))
	}
	if !messages.ValidSubjectPrefix(st.SubjectPrefix) {
		errs.add("nats.stream.subjectPrefix", fmt.Sprintf("%q is not dot-separated subject tokens without wildcards", st.SubjectPrefix))
	}
}

func (c *Config) validateRedis(errs *Errors) {
	r := c.Redis
	r.validateConnection(errs)
	notNegative(errs, "redis.retention", r.Retention)
	if r.LockTTL < 300*time.Millisecond {
		errs.add("redis.lockTTL", fmt.Sprintf("%s is shorter than 300ms", formatDuration(r.LockTTL)))
	}
}

// validateConnection checks what every user of Redis needs, the client
// commands included: where it is, how to log in, the key prefix.
func (r RedisConfig) validateConnection(errs *Errors) {
	if r.URL == "" {
		errs.add("redis.url", "required")
	} else if u, err := url.Parse(r.URL.Reveal()); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		errs.add("redis.url", fmt.Sprintf("%q is not a redis:// or rediss:// URL", r.URL))
	} else if opt, err := redis.ParseURL(r.URL.Reveal()); err != nil {
		// go-redis' messages name the faulty part, never the password.
		errs.add("redis.url", fmt.Sprintf("%q does not parse: %v", r.URL, err))
	} else if len(r.Addrs) > 0 && opt.DB != 0 {
		errs.add("redis.url", fmt.Sprintf("database %d cannot be used with redis.addrs: Redis Cluster has only database 0", opt.DB))
	}
	hostPorts := func(path string, addrs []string) {
		for i, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs.add(fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("%q is not host:port", a))
			}
		}
	}
	hostPorts("redis.addrs", r.Addrs)
	hostPorts("redis.sentinel.addrs", r.Sentinel.Addrs)
	switch s := r.Sentinel; {
	case s.MasterName != "" && len(s.Addrs) == 0:
		errs.add("redis.sentinel.addrs", "required with redis.sentinel.masterName")
	case s.MasterName == "" && (len(s.Addrs) > 0 || s.Password != ""):
		errs.add("redis.sentinel.masterName", "required with redis.sentinel.addrs or password")
	case s.MasterName != "" && len(r.Addrs) > 0:
		errs.add("redis", "addrs (Cluster) and sentinel are alternatives: set only one")
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		errs.add("redis.keyPrefix", fmt.Sprintf("%q must not contain '{' or '}': the target's hash tag follows it", r.KeyPrefix))
	}
	validateTLS(errs, "redis.tls", r.TLS)
}

func validateTLS(errs *Errors, path string, t TLSConfig) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs.add(path, "certFile and keyFile go together")
	}
}

func (t TargetConfig) validate(errs *Errors) {
	p := "targets." + t.Name + "."
	if !messages.ValidTarget(t.Name) {
		errs.add("targets."+t.Name, "name must match [A-Za-z0-9_-]{1,64}")
	}
	if t.Pathling.URL == "" {
		errs.add(p+"pathling.url", "required")
	} else if msg := checkHTTPURL(t.Pathling.URL); msg != "" {
		errs.add(p+"pathling.url", msg)
	}
	if s := t.Pathling.ExportURLStyle; s != ExportURLBase && s != ExportURLEndpoint {
		errs.add(p+"pathling.exportUrlStyle", fmt.Sprintf("%q is not %s or %s", s, ExportURLBase, ExportURLEndpoint))
	}
	positive(errs, p+"pathling.requestTimeout", t.Pathling.RequestTimeout)
	t.Pathling.Auth.validate(errs, p+"pathling.auth.")

	for i, a := range t.AllowedExportURLs {
		if msg := checkHTTPURL(a); msg != "" {
			errs.add(fmt.Sprintf("%sallowedExportUrls[%d]", p, i), msg)
		}
	}
	if len(t.AllowedExportURLs) == 0 && t.Defaults.ExportURL == "" {
		errs.add(p+"allowedExportUrls", "required when defaults.exportUrl is empty (no request could name a source)")
	}
	validateRequestFields(errs, p+"defaults.", t.Defaults)
	positive(errs, p+"timeout", t.Timeout)
	if t.Timeout > messages.MaxTimeout {
		errs.add(p+"timeout", fmt.Sprintf("%s is longer than 7 days (168h)", formatDuration(t.Timeout)))
	}
	notNegative(errs, p+"overlap", t.Overlap)
	t.Poll.validate(errs, p+"poll.")
	if t.Poll.Policy != PollHistory && t.Poll.Policy != PollSeed {
		errs.add(p+"poll.policy", fmt.Sprintf("%q is not %s or %s", t.Poll.Policy, PollHistory, PollSeed))
	}
	positive(errs, p+"poll.floor", t.Poll.Floor)
	t.Retry.validate(errs, p+"retry.")
	if t.MaxJobLosses < 1 {
		errs.add(p+"maxJobLosses", fmt.Sprintf("%d is not positive", t.MaxJobLosses))
	}
	seen := map[string]bool{}
	for i, s := range t.Schedules {
		sp := fmt.Sprintf("%sschedules[%d].", p, i)
		switch {
		case s.Name == "":
			errs.add(sp+"name", "required")
		case !messages.ValidTarget(s.Name):
			errs.add(sp+"name", fmt.Sprintf("%q must match [A-Za-z0-9_-]{1,64}", s.Name))
		case seen[s.Name]:
			errs.add(sp+"name", fmt.Sprintf("%q is used by another schedule of this target", s.Name))
		}
		seen[s.Name] = true
		if s.Cron == "" {
			errs.add(sp+"cron", "required")
		} else if _, err := s.Parse(); err != nil {
			errs.add(sp+"cron", fmt.Sprintf("%q is not a 5-field cron expression: %v", s.Cron, err))
		}
		validateRequestFields(errs, sp+"request.", s.Request)
		if s.Request.ExportURL == "" && t.Defaults.ExportURL == "" {
			errs.add(sp+"request.exportUrl", "required: the target has no defaults.exportUrl")
		}
	}
}

func (a AuthConfig) validate(errs *Errors, p string) {
	need := func(key string, set bool) {
		if !set {
			errs.add(p+key, fmt.Sprintf("required with type %s", a.Type))
		}
	}
	switch a.Type {
	case AuthNone:
	case AuthBearer:
		need("token", a.Token != "")
	case AuthClientCredentials:
		need("tokenUrl", a.TokenURL != "")
		need("clientId", a.ClientID != "")
		need("clientSecret", a.ClientSecret != "")
	case AuthSMARTBackend:
		need("clientId", a.ClientID != "")
		need("privateKey", a.PrivateKey != "")
		if a.PrivateKey != "" {
			var jwk map[string]any
			if json.Unmarshal([]byte(a.PrivateKey.Reveal()), &jwk) != nil {
				errs.add(p+"privateKey", "is not a JWK (a JSON object)")
			}
		}
		if a.Alg != "" && a.Alg != "RS384" && a.Alg != "ES384" {
			errs.add(p+"alg", fmt.Sprintf("%q is not RS384 or ES384", a.Alg))
		}
	default:
		errs.add(p+"type", fmt.Sprintf("%q is not one of %s", a.Type, strings.Join(AuthTypes(), ", ")))
	}
	if a.TokenURL != "" {
		if msg := checkHTTPURL(a.TokenURL); msg != "" {
			errs.add(p+"tokenUrl", msg)
		}
	}
}

func (b BackoffConfig) validate(errs *Errors, p string) {
	positive(errs, p+"initial", b.Initial)
	if b.Factor < 1 {
		errs.add(p+"factor", fmt.Sprintf("%g is below 1", b.Factor))
	}
	if b.Max < b.Initial {
		errs.add(p+"max", fmt.Sprintf("%s is shorter than initial %s", formatDuration(b.Max), formatDuration(b.Initial)))
	}
	if b.Jitter < 0 || b.Jitter > 1 {
		errs.add(p+"jitter", fmt.Sprintf("%g is not between 0 and 1", b.Jitter))
	}
}

// checkHTTPURL returns what is wrong with an absolute http(s) URL meant for
// configuration, or "".
func checkHTTPURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Sprintf("%q is not an absolute http(s) URL", redactURL(s))
	case u.User != nil:
		return fmt.Sprintf("%q must not contain user info (configure auth instead)", redactURL(s))
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q must not contain a query or fragment", s)
	}
	return ""
}

func required(errs *Errors, path, v string) {
	if v == "" {
		errs.add(path, "required")
	}
}

func positive(errs *Errors, path string, d time.Duration) {
	if d <= 0 {
		errs.add(path, fmt.Sprintf("%s is not positive", formatDuration(d)))
	}
}

func notNegative(errs *Errors, path string, d time.Duration) {
	if d < 0 {
		errs.add(path, fmt.Sprintf("%s is negative", formatDuration(d)))
	}
}

// envSharingCandidates returns, in order, the names (sorted) of the targets
// that may share a variable with another: those whose tokens are equal, and
// those whose token is another's followed by "_" and the head of a leaf's
// name that another leaf's name completes ("x" and "x_defaults": X_ +
// DEFAULTS_TIMEOUT = X_DEFAULTS_ + TIMEOUT). Validate compares the variables
// of these only, not those of every target.
func envSharingCandidates(names []string) []string {
	leaves := leavesOf(reflect.TypeFor[TargetConfig]())
	leafNames := make(map[string]bool, len(leaves))
	for _, l := range leaves {
		leafNames[l.env] = true
	}
	heads := map[string]bool{} // R such that R + "_" + Y is a leaf for a leaf Y
	for x := range leafNames {
		for q := range len(x) {
			if x[q] == '_' && leafNames[x[q+1:]] {
				heads[x[:q]] = true
			}
		}
	}
	byToken := make(map[string][]string, len(names))
	for _, n := range names {
		tok := envToken(n)
		byToken[tok] = append(byToken[tok], n)
	}
	cand := map[string]bool{}
	for tok, ns := range byToken {
		if len(ns) > 1 {
			for _, n := range ns {
				cand[n] = true
			}
		}
		for p := range len(tok) {
			if tok[p] != '_' || !heads[tok[p+1:]] {
				continue
			}
			if short, ok := byToken[tok[:p]]; ok {
				for _, n := range append(short, ns...) {
					cand[n] = true
				}
			}
		}
	}
	out := make([]string, 0, len(cand))
	for _, n := range names {
		if cand[n] {
			out = append(out, n)
		}
	}
	return out
}
