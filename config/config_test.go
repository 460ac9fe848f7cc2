package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/config"
)

// envMap turns a map into Load's env lookup.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, yaml string, env map[string]string) *config.Config {
	t.Helper()
	path := ""
	if yaml != "" {
		path = writeFile(t, "config.yaml", yaml)
	}
	cfg, err := config.Load(path, envMap(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func loadErr(t *testing.T, yaml string, env map[string]string) error {
	t.Helper()
	path := ""
	if yaml != "" {
		path = writeFile(t, "config.yaml", yaml)
	}
	cfg, err := config.Load(path, envMap(env))
	if err == nil {
		t.Fatalf("Load succeeded, want an error; config %+v", cfg)
	}
	if !errors.Is(err, config.ErrInvalid) {
		t.Errorf("error %v does not match ErrInvalid", err)
	}
	return err
}

func TestLoadDefaultsOnly(t *testing.T) {
	cfg := mustLoad(t, "", nil)
	if got := cfg.NATS.URL.Reveal(); got != "nats://127.0.0.1:4222" {
		t.Errorf("nats.url = %q", got)
	}
	if got := cfg.Redis.URL.Reveal(); got != "redis://127.0.0.1:6379/0" {
		t.Errorf("redis.url = %q", got)
	}
	c := cfg.NATS.Consumer
	if c.Durable != "pathling-sync" || c.AckWait != time.Minute || c.MaxDeliver != -1 || c.MaxWorkers != 256 {
		t.Errorf("consumer = %+v", c)
	}
	s := cfg.NATS.Stream
	if s.Name != "PATHLING_SYNC" || s.SubjectPrefix != "pathling.sync" || s.MaxAge != 720*time.Hour || s.Replicas != 1 || s.Duplicates != 2*time.Minute {
		t.Errorf("stream = %+v", s)
	}
	if cfg.Admin.Addr != ":9464" || cfg.Log.Level != "info" || cfg.Log.Format != "json" {
		t.Errorf("admin/log = %+v %+v", cfg.Admin, cfg.Log)
	}
	if cfg.Redis.KeyPrefix != "pathling-sync:" || cfg.Redis.Retention != 168*time.Hour || cfg.Redis.LockTTL != time.Minute {
		t.Errorf("redis = %+v", cfg.Redis)
	}
	host, _ := os.Hostname()
	if host != "" && cfg.Service.InstanceID != host {
		t.Errorf("instanceId = %q, want the host name %q", cfg.Service.InstanceID, host)
	}
	if cfg.Service.Source != "pathling-sync" || cfg.Service.QueueRetry != 5*time.Second || cfg.Service.ShutdownGrace != 8*time.Second {
		t.Errorf("service = %+v", cfg.Service)
	}
	if len(cfg.Targets) != 0 {
		t.Errorf("targets = %v, want none", cfg.TargetNames())
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg := mustLoad(t, "# nothing\n", nil)
	if cfg.NATS.Consumer.MaxWorkers != 256 {
		t.Errorf("maxWorkers = %d", cfg.NATS.Consumer.MaxWorkers)
	}
}

const precedenceYAML = `
nats:
  url: nats://file:4222
  consumer:
    maxWorkers: 10
    ackWait: 30s
redis:
  keyPrefix: "file:"
log:
  format: text
targets:
  prod:
    pathling:
      url: http://pathling-file:8080/fhir
    allowedExportUrls: [https://source/fhir]
    overlap: 0s
    poll:
      jitter: 0
  Stage-EU:
    pathling:
      url: http://stage:8080/fhir
    defaults:
      exportUrl: https://source/fhir
  bare:
`

func TestYAMLThenEnvThenDefaults(t *testing.T) {
	cfg := mustLoad(t, precedenceYAML, map[string]string{
		"PATHLING_SYNC_NATS_CONSUMER_MAX_WORKERS": "20",
		"NATS_URL":                "nats://env:4222",
		"REDIS_URL":               "redis://alias:6379/0",
		"PATHLING_SYNC_REDIS_URL": "redis://specific:6379/1",
		"PATHLING_SYNC_TARGETS_PROD_PATHLING_URL":        "http://pathling-env:8080/fhir",
		"PATHLING_SYNC_TARGETS_STAGE_EU_TIMEOUT":         "45m",
		"PATHLING_SYNC_TARGETS_BARE_PATHLING_URL":        "http://bare:8080/fhir",
		"PATHLING_SYNC_TARGETS_BARE_DEFAULTS_TYPES":      "Patient, Observation,",
		"PATHLING_SYNC_TARGETS_BARE_DEFAULTS_EXPORT_URL": "https://source/fhir/$export",
		"PATHLING_SYNC_ADMIN_ADDR":                       "127.0.0.1:9999",
		"PATHLING_SYNC_TARGETS_PROD_KEEP_JOBS":           "true",
		"PATHLING_SYNC_TARGETS_PROD_SCHEDULES":           `[{name: nightly, cron: "0 2 * * *", catchUp: true, request: {exportUrl: "https://source/fhir", saveMode: overwrite}}]`,
	})
	if got := cfg.NATS.Consumer.MaxWorkers; got != 20 {
		t.Errorf("maxWorkers = %d, want 20 (env over file)", got)
	}
	if got := cfg.NATS.Consumer.AckWait; got != 30*time.Second {
		t.Errorf("ackWait = %s, want 30s (file over default)", got)
	}
	if got := cfg.NATS.Consumer.Durable; got != "pathling-sync" {
		t.Errorf("durable = %q, want the default", got)
	}
	if got := cfg.NATS.URL.Reveal(); got != "nats://env:4222" {
		t.Errorf("nats.url = %q, want NATS_URL over the file", got)
	}
	if got := cfg.Redis.URL.Reveal(); got != "redis://specific:6379/1" {
		t.Errorf("redis.url = %q, want PATHLING_SYNC_REDIS_URL over REDIS_URL", got)
	}
	if cfg.Redis.KeyPrefix != "file:" || cfg.Log.Format != "text" || cfg.Admin.Addr != "127.0.0.1:9999" {
		t.Errorf("keyPrefix %q format %q admin %q", cfg.Redis.KeyPrefix, cfg.Log.Format, cfg.Admin.Addr)
	}

	prod, ok := cfg.Target("prod")
	if !ok || prod.Name != "prod" {
		t.Fatalf("target prod: %v %+v", ok, prod)
	}
	if prod.Pathling.URL != "http://pathling-env:8080/fhir" {
		t.Errorf("prod url = %q", prod.Pathling.URL)
	}
	if prod.Overlap != 0 || prod.Poll.Jitter != 0 {
		t.Errorf("explicit zeros lost: overlap %s jitter %g", prod.Overlap, prod.Poll.Jitter)
	}
	if prod.Poll.Initial != 5*time.Second || prod.Poll.Factor != 1.5 || prod.Poll.Max != time.Minute {
		t.Errorf("poll defaults lost: %+v", prod.Poll)
	}
	if prod.Timeout != 2*time.Hour || prod.MaxJobLosses != 3 || prod.Retry.Initial != 30*time.Second || prod.Pathling.RequestTimeout != 30*time.Second {
		t.Errorf("target defaults: %+v", prod)
	}
	if !prod.KeepJobs {
		t.Error("keepJobs from env not applied")
	}
	if len(prod.Schedules) != 1 || !reflect.DeepEqual(prod.Schedules[0], config.ScheduleConfig{Name: "nightly", Cron: "0 2 * * *", CatchUp: true,
		Request: config.RequestDefaults{ExportURL: "https://source/fhir", SaveMode: "overwrite"}}) {
		t.Errorf("schedules = %+v", prod.Schedules)
	}
	if prod.Pathling.Auth.Type != config.AuthNone || prod.Pathling.ExportURLStyle != config.ExportURLBase {
		t.Errorf("auth %q style %q", prod.Pathling.Auth.Type, prod.Pathling.ExportURLStyle)
	}

	stage, _ := cfg.Target("Stage-EU")
	if stage.Timeout != 45*time.Minute {
		t.Errorf("Stage-EU timeout = %s: env name not matched case-insensitively with '-' as '_'", stage.Timeout)
	}
	bare, _ := cfg.Target("bare")
	if bare.Pathling.URL != "http://bare:8080/fhir" || !slices.Equal(bare.Defaults.Types, []string{"Patient", "Observation"}) {
		t.Errorf("bare = %+v", bare)
	}
	if bare.Overlap != 2*time.Minute {
		t.Errorf("a target given as null did not get the defaults: overlap %s", bare.Overlap)
	}
	if _, ok := cfg.Target("default"); ok {
		t.Error("target default created without any of its variables")
	}
	if got := cfg.TargetNames(); !slices.Equal(got, []string{"Stage-EU", "bare", "prod"}) {
		t.Errorf("TargetNames = %v", got)
	}
}

func TestTargetsFromEnvironmentOnly(t *testing.T) {
	cfg := mustLoad(t, "", map[string]string{
		"PATHLING_SYNC_TARGETS":                             "eu, us",
		"PATHLING_SYNC_TARGETS_EU_PATHLING_URL":             "http://eu:8080/fhir",
		"PATHLING_SYNC_TARGETS_EU_DEFAULTS_EXPORT_URL":      "https://src/fhir",
		"PATHLING_SYNC_TARGETS_US_PATHLING_URL":             "http://us:8080/fhir",
		"PATHLING_SYNC_TARGETS_US_ALLOWED_EXPORT_URLS":      "https://a/fhir,https://b/fhir",
		"PATHLING_SYNC_TARGETS_US_PATHLING_AUTH_TYPE":       "bearer",
		"PATHLING_SYNC_TARGETS_US_PATHLING_AUTH_TOKEN":      "s3cret-token",
		"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_URL":        "http://default:8080/fhir",
		"PATHLING_SYNC_TARGETS_DEFAULT_ALLOWED_EXPORT_URLS": "https://d/fhir",
	})
	if got := cfg.TargetNames(); !slices.Equal(got, []string{"default", "eu", "us"}) {
		t.Fatalf("targets = %v", got)
	}
	us, _ := cfg.Target("us")
	if !slices.Equal(us.AllowedExportURLs, []string{"https://a/fhir", "https://b/fhir"}) || us.Pathling.Auth.Token.Reveal() != "s3cret-token" {
		t.Errorf("us = %+v", us)
	}
}

func TestSeedVariables(t *testing.T) {
	cfg := mustLoad(t, "", map[string]string{
		"PATHLING_URL":      "http://localhost:8080/fhir",
		"SOURCE_EXPORT_URL": "https://source-server.example.com/fhir/$export",
		"SAVE_MODE":         "overwrite",
		"TIMEOUT":           "7200",
		"RESOURCE_TYPES":    "Patient,Observation",
		"SINCE":             "2025-01-01T00:00:00Z",
	})
	d, ok := cfg.Target("default")
	if !ok {
		t.Fatal("seed variables did not create the target default")
	}
	if d.Pathling.URL != "http://localhost:8080/fhir" {
		t.Errorf("PATHLING_URL → pathling.url = %q", d.Pathling.URL)
	}
	if d.Defaults.ExportURL != "https://source-server.example.com/fhir/$export" {
		t.Errorf("SOURCE_EXPORT_URL → defaults.exportUrl = %q", d.Defaults.ExportURL)
	}
	if !slices.Equal(d.AllowedExportURLs, []string{"https://source-server.example.com/fhir/$export"}) {
		t.Errorf("SOURCE_EXPORT_URL → allowedExportUrls = %v", d.AllowedExportURLs)
	}
	if d.Defaults.SaveMode != "overwrite" {
		t.Errorf("SAVE_MODE → %q", d.Defaults.SaveMode)
	}
	if d.Timeout != 2*time.Hour {
		t.Errorf("TIMEOUT=7200 → %s, want 2h", d.Timeout)
	}
	if !slices.Equal(d.Defaults.Types, []string{"Patient", "Observation"}) {
		t.Errorf("RESOURCE_TYPES → %v", d.Defaults.Types)
	}
	if d.Defaults.Since != "2025-01-01T00:00:00Z" {
		t.Errorf("SINCE → %q", d.Defaults.Since)
	}
}

func TestSeedVariablesMergeIntoFileAndLoseToSpecificOnes(t *testing.T) {
	yaml := `
targets:
  default:
    pathling:
      url: http://file:8080/fhir
    allowedExportUrls: [https://other/fhir]
    defaults:
      saveMode: merge
`
	cfg := mustLoad(t, yaml, map[string]string{
		"PATHLING_URL":      "http://seed:8080/fhir",
		"SOURCE_EXPORT_URL": "https://source/fhir",
		"SAVE_MODE":         "overwrite",
		"TIMEOUT":           "90m",
		"PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_URL": "http://specific:8080/fhir",
	})
	d, _ := cfg.Target("default")
	if d.Pathling.URL != "http://specific:8080/fhir" {
		t.Errorf("url = %q, want PATHLING_SYNC_TARGETS_DEFAULT_PATHLING_URL over PATHLING_URL", d.Pathling.URL)
	}
	if d.Defaults.SaveMode != "overwrite" {
		t.Errorf("saveMode = %q, want SAVE_MODE over the file", d.Defaults.SaveMode)
	}
	if !slices.Equal(d.AllowedExportURLs, []string{"https://other/fhir", "https://source/fhir"}) {
		t.Errorf("allowed = %v", d.AllowedExportURLs)
	}
	if d.Timeout != 90*time.Minute {
		t.Errorf("TIMEOUT=90m → %s", d.Timeout)
	}
}

func TestBadEnvironmentValues(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"TIMEOUT", "soon", `TIMEOUT: "soon" is not a positive number of seconds`},
		{"PATHLING_SYNC_NATS_CONSUMER_MAX_WORKERS", "many", `PATHLING_SYNC_NATS_CONSUMER_MAX_WORKERS: "many" is not an integer`},
		{"PATHLING_SYNC_NATS_CONSUMER_ACK_WAIT", "60", `PATHLING_SYNC_NATS_CONSUMER_ACK_WAIT: "60" is not a duration`},
		{"PATHLING_SYNC_NATS_TLS_INSECURE_SKIP_VERIFY", "maybe", `"maybe" is not true or false`},
		{"PATHLING_SYNC_TARGETS_DEFAULT_SCHEDULES", "[{name: a, crom: x}]", `PATHLING_SYNC_TARGETS_DEFAULT_SCHEDULES[0].crom: unknown key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadErr(t, "", map[string]string{tc.name: tc.value, "PATHLING_URL": "http://p/fhir", "SOURCE_EXPORT_URL": "http://s/fhir"})
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestUnknownKeysAndBadTypesInYAML(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"snake case key", "nats:\n  consumer:\n    max_workers: 3\n",
			[]string{"nats.consumer.max_workers: unknown key (did you mean maxWorkers?) (line 3)"}},
		{"unknown top-level", "natz: {}\n", []string{"natz: unknown key (line 1)"}},
		{"unknown in target", "targets:\n  a:\n    pathling:\n      urll: http://x\n",
			[]string{"targets.a.pathling.urll: unknown key (line 4)"}},
		{"unknown in schedule", "targets:\n  a:\n    schedules:\n      - name: n\n        when: daily\n",
			[]string{"targets.a.schedules[0].when: unknown key"}},
		{"integer", "nats:\n  consumer:\n    maxWorkers: lots\n",
			[]string{`nats.consumer.maxWorkers: "lots" is not an integer (line 3)`}},
		{"duration as number", "redis:\n  lockTTL: 60\n",
			[]string{`redis.lockTTL: "60" is not a duration`}},
		{"list expected", "targets:\n  a:\n    allowedExportUrls: https://x\n",
			[]string{"targets.a.allowedExportUrls: must be a list"}},
		{"mapping expected", "nats: nats://x\n", []string{"nats: must be a mapping"}},
		{"several at once", "log:\n  colour: red\nadmin:\n  adr: x\n",
			[]string{"log.colour: unknown key", "admin.adr: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadErr(t, tc.yaml, nil)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml"), nil)
	if !errors.Is(err, config.ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v: want ErrInvalid and os.ErrNotExist", err)
	}
}

// A poll block keeps the policy and floor it does not name; both can be set.
func TestPollPolicyAndFloor(t *testing.T) {
	cfg := mustLoad(t, `
targets:
  a:
    pathling: {url: "http://a/fhir"}
    allowedExportUrls: [https://source/fhir]
    poll: {initial: 2s, max: 30s}
  b:
    pathling: {url: "http://b/fhir"}
    allowedExportUrls: [https://source/fhir]
    poll: {policy: seed, floor: 500ms}
`, nil)
	a, _ := cfg.Target("a")
	b, _ := cfg.Target("b")
	if a.Poll.Policy != config.PollHistory || a.Poll.Floor != time.Second || a.Poll.Initial != 2*time.Second || a.Poll.Factor != 1.5 {
		t.Errorf("a.poll %+v: want policy history, floor 1s, initial 2s, factor 1.5", a.Poll)
	}
	if b.Poll.Policy != config.PollSeed || b.Poll.Floor != 500*time.Millisecond || b.Poll.Initial != 5*time.Second {
		t.Errorf("b.poll %+v: want policy seed, floor 500ms, initial 5s", b.Poll)
	}
}

func TestYAMLAnchorsAndMergeKeys(t *testing.T) {
	cfg := mustLoad(t, `
targets:
  a: &common
    pathling: {url: "http://a/fhir"}
    allowedExportUrls: [https://source/fhir]
    poll: {initial: 2s, factor: 2, max: 30s, jitter: 0}
  b:
    <<: *common
    pathling: {url: "http://b/fhir"}
    timeout: 1h
`, nil)
	a, _ := cfg.Target("a")
	b, _ := cfg.Target("b")
	if a.Poll.Initial != 2*time.Second || b.Poll.Initial != 2*time.Second || b.Timeout != time.Hour || a.Timeout != 2*time.Hour {
		t.Errorf("a %+v\nb %+v", a, b)
	}
	if !slices.Equal(a.AllowedExportURLs, []string{"https://source/fhir"}) {
		t.Errorf("allowed %v", a.AllowedExportURLs)
	}
}

// The targets are decoded one by one (see decodeYAML): what the whole
// document's decoding reported must still be reported.
func TestTargetsDecodedOneByOne(t *testing.T) {
	err := loadErr(t, "targets:\n  a:\n    pathling: {url: http://a/fhir}\n  b: {pathling: {url: http://b/fhir}}\n  a:\n    timeout: 1h\n", nil)
	if err == nil || !strings.Contains(err.Error(), `line 5: mapping key "a" already defined at line 2`) {
		t.Errorf("duplicate target: error %v", err)
	}
	cfg := mustLoad(t, "targets:\n  a:\n  b:\n    pathling: {url: http://b/fhir}\n    defaults: {exportUrl: https://s/fhir}\n",
		map[string]string{"PATHLING_SYNC_TARGETS_A_PATHLING_URL": "http://a/fhir", "PATHLING_SYNC_TARGETS_A_DEFAULTS_EXPORT_URL": "https://s/fhir"})
	if a, _ := cfg.Target("a"); a.Timeout != 2*time.Hour || a.Name != "a" {
		t.Errorf("target with no body: %+v", a)
	}
	if b, _ := cfg.Target("b"); b.Pathling.URL != "http://b/fhir" || b.Defaults.ExportURL != "https://s/fhir" {
		t.Errorf("b: %+v", b)
	}
}
