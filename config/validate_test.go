package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/config"
)

// validTarget is a minimal valid target, to which cases add one mistake.
const validTarget = `
targets:
  default:
    pathling:
      url: http://pathling:8080/fhir
    defaults:
      exportUrl: https://source/fhir
`

func TestValidationMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		env  map[string]string
		want []string
	}{
		{name: "pathling url required",
			yaml: "targets:\n  default:\n    defaults:\n      exportUrl: https://s/fhir\n",
			want: []string{"targets.default.pathling.url: required"}},
		{name: "seed vars without PATHLING_URL",
			env:  map[string]string{"SOURCE_EXPORT_URL": "https://s/fhir/$export"},
			want: []string{"targets.default.pathling.url: required"}},
		{name: "pathling url with password",
			yaml: "targets:\n  a:\n    pathling:\n      url: http://u:hunter2@p/fhir\n    defaults:\n      exportUrl: https://s/fhir\n",
			want: []string{`targets.a.pathling.url: "http://u:xxxxx@p/fhir" must not contain user info`}},
		{name: "no source at all",
			yaml: "targets:\n  a:\n    pathling:\n      url: http://p/fhir\n",
			want: []string{"targets.a.allowedExportUrls: required when defaults.exportUrl is empty"}},
		{name: "bad target name",
			yaml: "targets:\n  \"bad name\":\n    pathling:\n      url: http://p/fhir\n    defaults:\n      exportUrl: https://s/fhir\n",
			want: []string{"targets.bad name: name must match [A-Za-z0-9_-]{1,64}"}},
		{name: "unknown auth type", yaml: validTarget,
			env:  map[string]string{"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_TYPE": "basic"},
			want: []string{`targets.default.pathling.auth.type: "basic" is not one of none, bearer, client_credentials, smart_backend`}},
		{name: "client credentials incomplete", yaml: validTarget,
			env: map[string]string{"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_TYPE": "client_credentials"},
			want: []string{
				"targets.default.pathling.auth.tokenUrl: required with type client_credentials",
				"targets.default.pathling.auth.clientId: required with type client_credentials",
				"targets.default.pathling.auth.clientSecret: required with type client_credentials"}},
		{name: "bearer without token", yaml: validTarget,
			env:  map[string]string{"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_TYPE": "bearer"},
			want: []string{"targets.default.pathling.auth.token: required with type bearer"}},
		{name: "smart backend", yaml: validTarget,
			env: map[string]string{
				"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_TYPE":        "smart_backend",
				"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_PRIVATE_KEY": "not json",
				"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_AUTH_ALG":         "HS256"},
			want: []string{
				"targets.default.pathling.auth.clientId: required with type smart_backend",
				"targets.default.pathling.auth.privateKey: is not a JWK (a JSON object)",
				`targets.default.pathling.auth.alg: "HS256" is not RS384 or ES384`}},
		{name: "export url style", yaml: validTarget,
			env:  map[string]string{"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_EXPORT_URL_STYLE": "full"},
			want: []string{`targets.default.pathling.exportUrlStyle: "full" is not base or endpoint`}},
		{name: "request defaults", yaml: validTarget,
			env: map[string]string{
				"SAVE_MODE":      "upsert",
				"RESOURCE_TYPES": "Patient,patient",
				"SINCE":          "yesterday",
				"PATHLING_SYNC_TARGETS_DEFAULT_DEFAULTS_CONCURRENCY": "parallel"},
			want: []string{
				`targets.default.defaults.saveMode: "upsert" is not one of merge, overwrite, append, ignore, error`,
				`targets.default.defaults.types[1]: "patient" is not a FHIR resource type name`,
				`targets.default.defaults.since: "yesterday" is not an instant`,
				`targets.default.defaults.concurrency: "parallel" is not one of forbid, queue`}},
		{name: "auto since with until", yaml: validTarget,
			env:  map[string]string{"SINCE": "auto", "PATHLING_SYNC_TARGETS_DEFAULT_DEFAULTS_UNTIL": "2025-01-01T00:00:00Z"},
			want: []string{`targets.default.defaults.until: cannot be combined with since "auto"`}},
		{name: "allowed url", yaml: validTarget,
			env:  map[string]string{"PATHLING_SYNC_TARGETS_DEFAULT_ALLOWED_EXPORT_URLS": "https://ok/fhir,ftp://x/y"},
			want: []string{`targets.default.allowedExportUrls[1]: "ftp://x/y" is not an absolute http(s) URL`}},
		{name: "backoffs and limits", yaml: validTarget,
			env: map[string]string{
				"PATHLING_SYNC_TARGETS_DEFAULT_POLL_FACTOR":    "0.5",
				"PATHLING_SYNC_TARGETS_DEFAULT_POLL_MAX":       "1s",
				"PATHLING_SYNC_TARGETS_DEFAULT_RETRY_JITTER":   "1.5",
				"PATHLING_SYNC_TARGETS_DEFAULT_MAX_JOB_LOSSES": "0",
				"PATHLING_SYNC_TARGETS_DEFAULT_OVERLAP":        "-1m",
				"PATHLING_SYNC_TARGETS_DEFAULT_TIMEOUT":        "200h",
				"PATHLING_SYNC_TARGETS_DEFAULT_POLL_POLICY":    "smart",
				"PATHLING_SYNC_TARGETS_DEFAULT_POLL_FLOOR":     "0s"},
			want: []string{
				"targets.default.poll.factor: 0.5 is below 1",
				"targets.default.poll.max: 1s is shorter than initial 5s",
				`targets.default.poll.policy: "smart" is not history or seed`,
				"targets.default.poll.floor: 0s is not positive",
				"targets.default.retry.jitter: 1.5 is not between 0 and 1",
				"targets.default.maxJobLosses: 0 is not positive",
				"targets.default.overlap: -1m is negative",
				"targets.default.timeout: 200h is longer than 7 days (168h)"}},
		{name: "schedules",
			yaml: validTarget + "    schedules:\n      - {name: nightly, cron: \"0 2 * * *\"}\n      - {name: nightly, cron: \"61 * * * *\"}\n      - {cron: \"* * * * * *\"}\n",
			want: []string{
				`targets.default.schedules[1].name: "nightly" is used by another schedule of this target`,
				`targets.default.schedules[1].cron: "61 * * * *" is not a 5-field cron expression`,
				"targets.default.schedules[2].name: required",
				`targets.default.schedules[2].cron: "* * * * * *" is not a 5-field cron expression`}},
		{name: "env name collision",
			yaml: validTarget + "  default_defaults:\n    pathling:\n      url: http://p/fhir\n    defaults:\n      exportUrl: https://s/fhir\n",
			want: []string{`targets "default" and "default_defaults" share the environment variable PATHLING_SYNC_TARGETS_DEFAULT_DEFAULTS_TIMEOUT`}},
		{name: "env name collision by case",
			yaml: validTarget + "  DEFAULT:\n    pathling:\n      url: http://p/fhir\n    defaults:\n      exportUrl: https://s/fhir\n",
			want: []string{`targets.default: targets "DEFAULT" and "default" share the environment variable PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_URL; rename one`}},
		{name: "nats",
			env: map[string]string{
				"NATS_URL":                                    "http://nats:4222",
				"PATHLING_SYNC_NATS_TOKEN":                    "t",
				"PATHLING_SYNC_NATS_USER":                     "u",
				"PATHLING_SYNC_NATS_TLS_CERT_FILE":            "config_test.go",
				"PATHLING_SYNC_NATS_STREAM_NAME":              "a.b",
				"PATHLING_SYNC_NATS_STREAM_SUBJECT_PREFIX":    "a.>",
				"PATHLING_SYNC_NATS_STREAM_REPLICAS":          "7",
				"PATHLING_SYNC_NATS_STREAM_DUPLICATES":        "800h",
				"PATHLING_SYNC_NATS_CONSUMER_ACK_WAIT":        "100ms",
				"PATHLING_SYNC_NATS_CONSUMER_MAX_DELIVER":     "0",
				"PATHLING_SYNC_NATS_CONSUMER_MAX_ACK_PENDING": "10"},
			want: []string{
				`nats.url: "http://nats:4222" is not a nats://, tls://, ws:// or wss:// URL`,
				"nats: credsFile, nkeySeedFile, user and token are alternatives: set only one",
				"nats.tls: certFile and keyFile go together",
				`nats.stream.name: "a.b" must not contain`,
				`nats.stream.subjectPrefix: "a.>" is not dot-separated subject tokens without wildcards`,
				"nats.stream.replicas: 7 is not between 1 and 5",
				"nats.stream.duplicates: 800h is longer than nats.stream.maxAge 720h",
				"nats.consumer.ackWait: 100ms is shorter than 300ms",
				"nats.consumer.maxDeliver: 0 is neither -1 (unlimited) nor positive",
				"nats.consumer.maxAckPending: 10 is below nats.consumer.maxWorkers 256"}},
		{name: "redis",
			env: map[string]string{
				"REDIS_URL":                                "http://r:6379",
				"PATHLING_SYNC_REDIS_KEY_PREFIX":           "{x}",
				"PATHLING_SYNC_REDIS_LOCK_TTL":             "10ms",
				"PATHLING_SYNC_REDIS_SENTINEL_MASTER_NAME": "mymaster"},
			want: []string{
				`redis.url: "http://r:6379" is not a redis:// or rediss:// URL`,
				`redis.keyPrefix: "{x}" must not contain '{' or '}'`,
				"redis.lockTTL: 10ms is shorter than 300ms",
				"redis.sentinel.addrs: required with redis.sentinel.masterName"}},
		{name: "redis cluster with a database",
			env:  map[string]string{"REDIS_URL": "redis://r:6379/2", "PATHLING_SYNC_REDIS_ADDRS": "a:1,b"},
			want: []string{"redis.url: database 2 cannot be used with redis.addrs", `redis.addrs[1]: "b" is not host:port`}},
		{name: "service, admin and log",
			env: map[string]string{
				"PATHLING_SYNC_ADMIN_ADDR":          "9464",
				"PATHLING_SYNC_LOG_LEVEL":           "loud",
				"PATHLING_SYNC_LOG_FORMAT":          "xml",
				"PATHLING_SYNC_SERVICE_QUEUE_RETRY": "0s"},
			want: []string{
				`admin.addr: "9464" is not host:port`,
				`log.level: "loud" is not one of debug, info, warn, error`,
				`log.format: "xml" is not json or text`,
				"service.queueRetry: 0s is not positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadErr(t, tc.yaml, tc.env)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, strings.ReplaceAll(err.Error(), "; ", "\n"))
				}
			}
			var es config.Errors
			if !errors.As(err, &es) || len(es) < len(tc.want) {
				t.Errorf("want config.Errors with at least %d problems, got %#v", len(tc.want), err)
			}
		})
	}
}

func TestValidateOnBuiltConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Service.InstanceID = "test"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Default() with an instance id is invalid: %v", err)
	}
	tg := config.DefaultTarget()
	tg.Pathling.URL = "http://p/fhir"
	tg.Defaults.ExportURL = "https://s/fhir"
	cfg.Targets = map[string]config.TargetConfig{"x": tg}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultTarget() with urls is invalid: %v", err)
	}
	cfg.Service.InstanceID = ""
	var fe *config.FieldError
	if err := cfg.Validate(); !errors.As(err, &fe) || fe.Path != "service.instanceId" || fe.Message != "required" {
		t.Errorf("Validate() = %v, want service.instanceId: required", err)
	}
}
