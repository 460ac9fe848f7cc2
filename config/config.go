// Package config loads pathling-sync's configuration: one YAML file, then
// environment variables, then defaults, then validation.
//
// Every key can be set by an environment variable named PATHLING_SYNC_ and
// the key's path in upper snake case (nats.consumer.maxWorkers is
// PATHLING_SYNC_NATS_CONSUMER_MAX_WORKERS; targets.prod.pathling.url is
// PATHLING_SYNC_TARGETS_PROD_PATHLING_URL). NATS_URL and REDIS_URL set the
// connections, and the seed script's variables (PATHLING_URL,
// SOURCE_EXPORT_URL, SAVE_MODE, TIMEOUT, RESOURCE_TYPES, SINCE) configure the
// target named "default". EnvReference lists them all.
//
// Secrets (passwords, tokens, client secrets, private keys) are of type
// Secret and print as "[redacted]"; each can be given inline or by file
// (passwordFile, tokenFile, ...), which Load reads.
//
// Only cmd imports this package; everything else receives plain values
// (handlers.Target, natsbus configs, options) built from it.
package config

import (
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pathling-sync/pathling-sync/schedules"
)

// Config is the whole configuration of pathling-sync.
type Config struct {
	NATS    NATSConfig    `yaml:"nats"`
	Redis   RedisConfig   `yaml:"redis"`
	Admin   AdminConfig   `yaml:"admin"`
	Log     LogConfig     `yaml:"log"`
	Service ServiceConfig `yaml:"service"`
	// Targets are the Pathling instances syncs go into, by name. An event
	// names a target; it can never point the service at another host.
	Targets map[string]TargetConfig `yaml:"targets"`
	// Chains request syncs when others complete (see ChainConfig).
	Chains []ChainConfig `yaml:"chains" help:"chain rules, as a YAML/JSON list: [{name: a-to-b, on: {target: a, nonEmpty: true}, request: {target: b, since: auto}}]"`
}

// NATSConfig is the connection to NATS JetStream and the contract's stream
// and consumer. At most one of CredsFile, NKeySeedFile, User/Password and
// Token authenticates.
type NATSConfig struct {
	URL          SecretURL      `yaml:"url" env:"NATS_URL" help:"NATS server URL; several comma-separated for a cluster; tls:// for TLS"`
	CredsFile    string         `yaml:"credsFile" help:"NATS credentials file (JWT and NKey seed), e.g. from nsc"`
	NKeySeedFile string         `yaml:"nkeySeedFile" help:"file holding an NKey user seed"`
	User         string         `yaml:"user" help:"NATS user name (with password)"`
	Password     Secret         `yaml:"password" help:"NATS password"`
	PasswordFile string         `yaml:"passwordFile" help:"file holding the NATS password"`
	Token        Secret         `yaml:"token" help:"NATS authentication token"`
	TokenFile    string         `yaml:"tokenFile" help:"file holding the NATS token"`
	TLS          TLSConfig      `yaml:"tls"`
	Stream       StreamConfig   `yaml:"stream"`
	Consumer     ConsumerConfig `yaml:"consumer"`
}

// TLSConfig configures a TLS client: the CA to trust and an optional client
// certificate. Any field set turns TLS on.
type TLSConfig struct {
	CAFile             string `yaml:"caFile" help:"PEM file of the CA certificates to trust (default: the system's)"`
	CertFile           string `yaml:"certFile" help:"PEM client certificate (with keyFile)"`
	KeyFile            string `yaml:"keyFile" help:"PEM private key of the client certificate"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify" help:"skip server certificate verification (tests only)"`
}

// Enabled reports whether any TLS setting is given.
func (t TLSConfig) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify
}

// StreamConfig is the JetStream stream holding every event.
type StreamConfig struct {
	Name          string        `yaml:"name" help:"JetStream stream name"`
	SubjectPrefix string        `yaml:"subjectPrefix" help:"subject prefix: events go to <prefix>.requested|completed|failed.<target>"`
	MaxAge        time.Duration `yaml:"maxAge" help:"how long the stream keeps events"`
	Replicas      int           `yaml:"replicas" help:"stream replicas (1..5; 3 in a production cluster)"`
	Duplicates    time.Duration `yaml:"duplicates" help:"window in which a repeated Nats-Msg-Id is dropped"`
	MaxBytes      int64         `yaml:"maxBytes" help:"stream size limit in bytes, oldest events dropped first (0: unlimited)"`
}

// ConsumerConfig is the durable pull consumer of SyncRequested events.
type ConsumerConfig struct {
	Durable       string        `yaml:"durable" help:"durable consumer name, shared by all replicas"`
	AckWait       time.Duration `yaml:"ackWait" help:"ack deadline of a delivery; kept alive with InProgress every third of it"`
	MaxDeliver    int           `yaml:"maxDeliver" help:"deliveries per message before JetStream gives up (-1: unlimited)"`
	MaxAckPending int           `yaml:"maxAckPending" help:"unacked messages across all replicas (-1: unlimited)"`
	MaxWorkers    int           `yaml:"maxWorkers" help:"syncs one replica runs at once"`
}

// RedisConfig is the connection to Redis (locks, runs, watermarks). The URL
// gives the node, credentials, database and TLS (rediss://); Addrs switches
// to Redis Cluster and Sentinel to a Sentinel-managed master, both through
// go-redis' universal client.
type RedisConfig struct {
	URL          SecretURL      `yaml:"url" env:"REDIS_URL" help:"Redis URL: redis://[user:password@]host:port/db, rediss:// for TLS"`
	Addrs        []string       `yaml:"addrs" help:"Redis Cluster node addresses (host:port, comma-separated); the URL then gives only credentials and TLS"`
	Sentinel     SentinelConfig `yaml:"sentinel"`
	Password     Secret         `yaml:"password" help:"Redis password (overrides the URL's)"`
	PasswordFile string         `yaml:"passwordFile" help:"file holding the Redis password"`
	KeyPrefix    string         `yaml:"keyPrefix" help:"prefix of every Redis key"`
	Retention    time.Duration  `yaml:"retention" help:"how long finished run records are kept (0: forever)"`
	LockTTL      time.Duration  `yaml:"lockTTL" help:"TTL of a target's lock, renewed every third of it by the driving replica"`
	TLS          TLSConfig      `yaml:"tls"`
}

// SentinelConfig selects a Sentinel-managed Redis master.
type SentinelConfig struct {
	MasterName   string   `yaml:"masterName" help:"Sentinel master name (enables Sentinel)"`
	Addrs        []string `yaml:"addrs" help:"Sentinel addresses (host:port, comma-separated)"`
	Password     Secret   `yaml:"password" help:"password of the Sentinels themselves"`
	PasswordFile string   `yaml:"passwordFile" help:"file holding the Sentinel password"`
}

// AdminConfig is the admin HTTP listener (metrics, health).
type AdminConfig struct {
	Addr string `yaml:"addr" help:"admin HTTP listen address: /metrics, /livez, /readyz"`
	// PProf is off by default: profiles and goroutine dumps reveal internals
	// (URLs, request ids) to whoever reaches the admin port.
	PProf bool `yaml:"pprof" help:"serve Go's net/http/pprof profiles under /debug/pprof/ on the admin listener"`
}

// LogConfig configures the service's logs.
type LogConfig struct {
	Level  string `yaml:"level" help:"log level: debug, info, warn or error"`
	Format string `yaml:"format" help:"log format: json or text"`
}

// SlogLevel returns Level as a slog.Level (info when it does not parse; Validate
// rejects such a level).
func (l LogConfig) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// ServiceConfig holds the service's own settings.
type ServiceConfig struct {
	Source        string        `yaml:"source" help:"CloudEvents source of the events the service publishes"`
	QueueRetry    time.Duration `yaml:"queueRetry" help:"how soon a queued request (concurrency: queue) tries its busy target again"`
	ShutdownGrace time.Duration `yaml:"shutdownGrace" help:"how long shutdown waits for handlers to settle their messages"`
	InstanceID    string        `yaml:"instanceId" default:"(host name)" help:"this replica's name in logs, lock records and metrics"`
}

// Auth types of a target's Pathling.
const (
	AuthNone              = "none"
	AuthBearer            = "bearer"
	AuthClientCredentials = "client_credentials"
	AuthSMARTBackend      = "smart_backend"
)

// AuthTypes returns the accepted auth types.
func AuthTypes() []string {
	return []string{AuthNone, AuthBearer, AuthClientCredentials, AuthSMARTBackend}
}

// Export URL styles: what a target's Pathling expects as exportUrl.
const (
	// ExportURLBase sends the source's FHIR base; Pathling appends /$export.
	ExportURLBase = "base"
	// ExportURLEndpoint sends the source's $export endpoint.
	ExportURLEndpoint = "endpoint"
)

// TargetConfig is one Pathling instance and how syncs into it run.
type TargetConfig struct {
	// Name is the target's key in Config.Targets, set by Load.
	Name     string         `yaml:"-"`
	Pathling PathlingConfig `yaml:"pathling"`
	// AllowedExportURLs are the source URLs a request may name (a URL
	// matches an entry with the same origin whose path it equals or extends
	// at a "/"). Defaults.ExportURL is always allowed.
	AllowedExportURLs []string         `yaml:"allowedExportUrls" help:"source URLs requests may name (comma-separated; prefix match at a path boundary)"`
	Defaults          RequestDefaults  `yaml:"defaults"`
	Timeout           time.Duration    `yaml:"timeout" help:"default timeout of a whole sync"`
	Overlap           time.Duration    `yaml:"overlap" help:"watermark = kick-off time minus this (0: none)"`
	Poll              PollConfig       `yaml:"poll"`
	Retry             BackoffConfig    `yaml:"retry"`
	MaxJobLosses      int              `yaml:"maxJobLosses" help:"404s of a started Pathling job before the sync fails with job_lost"`
	KeepJobs          bool             `yaml:"keepJobs" help:"keep finished jobs on Pathling instead of deleting them"`
	Schedules         []ScheduleConfig `yaml:"schedules" help:"cron schedules (UTC unless CRON_TZ=), as a YAML/JSON list: [{name: nightly, cron: \"0 2 * * *\", catchUp: false, request: {saveMode: overwrite}}]"`
}

// PathlingConfig is how to reach a target's Pathling server.
type PathlingConfig struct {
	URL            string        `yaml:"url" help:"Pathling FHIR base URL, e.g. http://pathling:8080/fhir"`
	ExportURLStyle string        `yaml:"exportUrlStyle" help:"what Pathling gets as exportUrl: base (the source's FHIR base) or endpoint (.../$export)"`
	RequestTimeout time.Duration `yaml:"requestTimeout" help:"deadline of each HTTP request to Pathling"`
	Auth           AuthConfig    `yaml:"auth"`
}

// AuthConfig is how the service authenticates to a target's Pathling. All
// replicas use the same identity: Pathling lets only a job's owner poll it.
type AuthConfig struct {
	Type             string `yaml:"type" help:"none, bearer (static token), client_credentials (OAuth2 client secret) or smart_backend (SMART Backend Services, signed JWT)"`
	Token            Secret `yaml:"token" help:"static bearer token (type bearer)"`
	TokenFile        string `yaml:"tokenFile" help:"file holding the bearer token"`
	TokenURL         string `yaml:"tokenUrl" help:"OAuth2 token endpoint (smart_backend: discovered from the Pathling URL when empty)"`
	ClientID         string `yaml:"clientId" help:"OAuth2 client id"`
	ClientSecret     Secret `yaml:"clientSecret" help:"OAuth2 client secret (type client_credentials)"`
	ClientSecretFile string `yaml:"clientSecretFile" help:"file holding the client secret"`
	Scope            string `yaml:"scope" help:"OAuth2 scope(s) to request, e.g. system/*.write (SMART v1; v2 system/*.cud); Pathling checks the authorities pathling:import-pnp and pathling:write in the token, not its scope (docs/pathling-prerequisites.md)"`
	PrivateKey       Secret `yaml:"privateKey" help:"private JWK (JSON, RSA or EC P-384) signing SMART assertions"`
	PrivateKeyFile   string `yaml:"privateKeyFile" help:"file holding the private JWK"`
	Alg              string `yaml:"alg" help:"assertion signing algorithm: RS384 or ES384 (default from the key)"`
	KID              string `yaml:"kid" help:"assertion key id (default: the JWK's kid)"`
}

// RequestDefaults fill the SyncRequested fields an event leaves empty.
type RequestDefaults struct {
	ExportURL             string        `yaml:"exportUrl" help:"default source export URL (its FHIR base or its $export endpoint)"`
	SaveMode              string        `yaml:"saveMode" help:"default save mode: merge, overwrite, append, ignore or error"`
	Types                 []string      `yaml:"types" help:"default resource types (comma-separated; empty: all)"`
	Since                 string        `yaml:"since" help:"default since: an instant, or auto (the stored watermark)"`
	Until                 string        `yaml:"until" help:"default until (an instant)"`
	TypeFilters           []string      `yaml:"typeFilters" help:"default _typeFilter values"`
	Elements              []string      `yaml:"elements" help:"default _elements values"`
	IncludeAssociatedData []string      `yaml:"includeAssociatedData" help:"default includeAssociatedData codes"`
	Concurrency           string        `yaml:"concurrency" help:"default concurrency policy: forbid or queue"`
	Timeout               time.Duration `yaml:"timeout" help:"default request timeout (0: the target's timeout)"`
}

// BackoffConfig is a capped exponential cadence with jitter.
type BackoffConfig struct {
	Initial time.Duration `yaml:"initial" help:"first wait"`
	Factor  float64       `yaml:"factor" help:"growth factor per wait (>= 1)"`
	Max     time.Duration `yaml:"max" help:"longest wait"`
	Jitter  float64       `yaml:"jitter" help:"random spread, a fraction (0..1)"`
}

// Poll policies (PollConfig.Policy).
const (
	// PollHistory plans a job's polls from the durations of the target's
	// past jobs of the same shape, once there are a few; the cadence until then.
	PollHistory = "history"
	// PollSeed always polls at the cadence (initial ×factor ≤ max).
	PollSeed = "seed"
)

// PollConfig is how a target's Pathling jobs are polled: the cadence, and
// the policy that may plan the polls from history instead.
type PollConfig struct {
	BackoffConfig `yaml:",inline"`
	Policy        string        `yaml:"policy" help:"history (plan polls from past job durations of the same shape, once known; the cadence until then) or seed (always the cadence)"`
	Floor         time.Duration `yaml:"floor" help:"shortest wait between polls a history plan may use (at most initial)"`
}

// ScheduleConfig is a cron schedule on which the service requests a sync of
// its target: with the fields of Request, the target's defaults filling the
// rest.
type ScheduleConfig struct {
	// Name identifies the schedule in request ids; unique within a target.
	Name string `yaml:"name"`
	// Cron is a standard 5-field cron expression (or a descriptor such as
	// "@hourly" or "@every 6h"), evaluated in UTC unless prefixed by
	// CRON_TZ=<zone>.
	Cron string `yaml:"cron"`
	// CatchUp publishes, at start-up, the latest tick before it (a tick
	// missed while no replica ran; one already published is deduplicated).
	CatchUp bool `yaml:"catchUp"`
	// Request holds SyncRequested fields the schedule's requests carry,
	// e.g. saveMode: overwrite for a nightly full sync.
	Request RequestDefaults `yaml:"request"`
}

// Parse returns the schedule's cron.Schedule, as every replica evaluates it
// (schedules.Parse: UTC unless CRON_TZ is given).
func (s ScheduleConfig) Parse() (cron.Schedule, error) { return schedules.Parse(s.Cron) }

// Default returns the configuration with every default and no target.
func Default() *Config {
	return &Config{
		NATS: NATSConfig{
			URL: "nats://127.0.0.1:4222",
			Stream: StreamConfig{
				Name:          "PATHLING_SYNC",
				SubjectPrefix: "pathling.sync",
				MaxAge:        720 * time.Hour,
				Replicas:      1,
				Duplicates:    2 * time.Minute,
			},
			Consumer: ConsumerConfig{
				Durable:       "pathling-sync",
				AckWait:       60 * time.Second,
				MaxDeliver:    -1,
				MaxAckPending: -1,
				MaxWorkers:    256,
			},
		},
		Redis: RedisConfig{
			URL:       "redis://127.0.0.1:6379/0",
			KeyPrefix: "pathling-sync:",
			Retention: 168 * time.Hour,
			LockTTL:   60 * time.Second,
		},
		Admin: AdminConfig{Addr: ":9464"},
		Log:   LogConfig{Level: "info", Format: "json"},
		Service: ServiceConfig{
			Source:        "pathling-sync",
			QueueRetry:    5 * time.Second,
			ShutdownGrace: 8 * time.Second,
		},
	}
}

// DefaultTarget returns a target with every default and no Pathling URL.
func DefaultTarget() TargetConfig {
	return TargetConfig{
		Pathling: PathlingConfig{
			ExportURLStyle: ExportURLBase,
			RequestTimeout: 30 * time.Second,
			Auth:           AuthConfig{Type: AuthNone},
		},
		Timeout: 2 * time.Hour,
		Overlap: 2 * time.Minute,
		Poll: PollConfig{
			BackoffConfig: BackoffConfig{Initial: 5 * time.Second, Factor: 1.5, Max: 60 * time.Second, Jitter: 0.1},
			Policy:        PollHistory,
			Floor:         time.Second,
		},
		Retry:        BackoffConfig{Initial: 30 * time.Second, Factor: 2, Max: 5 * time.Minute, Jitter: 0.1},
		MaxJobLosses: 3,
	}
}

// UnmarshalYAML starts every target from DefaultTarget, so that a YAML
// target sets only what it names and an explicit zero ("overlap: 0s",
// "jitter: 0") stays zero. The decoder's strictness (unknown keys) carries
// through.
func (t *TargetConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*t = DefaultTarget()
	type plain TargetConfig // without this method
	return unmarshal((*plain)(t))
}

// Target returns the target named name (exactly), with its Name set.
func (c *Config) Target(name string) (TargetConfig, bool) {
	t, ok := c.Targets[name]
	if ok {
		t.Name = name
	}
	return t, ok
}

// TargetNames returns the configured target names, sorted.
func (c *Config) TargetNames() []string {
	names := make([]string, 0, len(c.Targets))
	for n := range c.Targets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// targetByEnvName finds a configured target whose environment name (upper
// case, '-' as '_') is envName.
func (c *Config) targetByEnvName(envName string) (string, bool) {
	for _, n := range c.TargetNames() {
		if envToken(n) == envName {
			return n, true
		}
	}
	return "", false
}

// envToken is how a target name appears in environment variable names.
func envToken(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}
