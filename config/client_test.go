package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/config"
)

// A seed variable alone creates the target "default" without a Pathling
// URL: the service refuses that, a client command must not care.
func TestLoadClientIgnoresTargets(t *testing.T) {
	for _, seed := range []map[string]string{
		{"SOURCE_EXPORT_URL": `https://source/fhir/$export`, "NATS_URL": "nats://nats:4222"},
		{"SAVE_MODE": "merge"},
		{"TIMEOUT": "7200"},
		{"SINCE": "auto"},
		{"RESOURCE_TYPES": "Patient,Observation"},
		{"PATHLING_SYNC_TARGETS_DEFAULT_TIMEOUT": "not a duration"},
	} {
		if _, err := config.Load("", envMap(seed)); err == nil {
			t.Fatalf("%v: Load accepted a target without Pathling URL; the test no longer shows the difference", seed)
		}
		c, err := config.LoadClient("", envMap(seed))
		if err != nil {
			t.Fatalf("%v: LoadClient: %v", seed, err)
		}
		if c.RedisSet {
			t.Errorf("%v: RedisSet without any Redis setting", seed)
		}
		if u := seed["NATS_URL"]; u != "" && c.NATS.URL.Reveal() != u {
			t.Errorf("NATS URL %q, want %q", c.NATS.URL.Reveal(), u)
		}
	}
}

func TestLoadClientValidatesWhatItUses(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		path string
	}{
		"nats url":       {env: map[string]string{"NATS_URL": "http://nats:4222"}, path: "nats.url"},
		"subject prefix": {env: map[string]string{"PATHLING_SYNC_NATS_STREAM_SUBJECT_PREFIX": "a.>"}, path: "nats.stream.subjectPrefix"},
		"stream name":    {env: map[string]string{"PATHLING_SYNC_NATS_STREAM_NAME": "a.b"}, path: "nats.stream.name"},
		"redis url":      {env: map[string]string{"REDIS_URL": "http://redis"}, path: "redis.url"},
		"redis password": {env: map[string]string{"PATHLING_SYNC_REDIS_PASSWORD_FILE": "/nonexistent/pw"}, path: "redis.passwordFile"},
	} {
		_, err := config.LoadClient("", envMap(tc.env))
		var fe *config.FieldError
		if !errors.As(err, &fe) || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: got %v, want an error naming %s", name, err, tc.path)
		}
	}
}

func TestLoadClientReadsTheServiceFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	// The service's file: a target whose token file exists only where the
	// service runs, and settings a client does not use.
	yaml := `
nats:
  url: nats://nats:4222
  stream: {name: SYNC, subjectPrefix: x.sync}
  consumer: {ackWait: 1ms}
redis:
  url: redis://redis:6379/2
targets:
  main:
    pathling:
      url: http://pathling:8080/fhir
      auth: {type: bearer, tokenFile: /run/secrets/not-here}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadClient(path, envMap(map[string]string{"PATHLING_SYNC_NATS_URL": "nats://other:4222"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL.Reveal() != "nats://other:4222" || c.NATS.Stream.Name != "SYNC" || c.NATS.Stream.SubjectPrefix != "x.sync" {
		t.Errorf("NATS %+v", c.NATS)
	}
	if !c.RedisSet || c.Redis.URL.Reveal() != "redis://redis:6379/2" {
		t.Errorf("Redis set %t, %s", c.RedisSet, c.Redis.URL.Reveal())
	}
	if c.Targets["main"] != "http://pathling:8080/fhir" {
		t.Errorf("targets %v", c.Targets)
	}
	// Redis set by the environment only.
	c, err = config.LoadClient("", envMap(map[string]string{"REDIS_URL": "redis://r:6379/0"}))
	if err != nil || !c.RedisSet {
		t.Fatalf("REDIS_URL: %v, set %t", err, c != nil && c.RedisSet)
	}
	// A broken file is still an error: it is the same file the service reads.
	if err := os.WriteFile(path, []byte("nats: {url: [}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.LoadClient(path, nil); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("broken YAML: %v", err)
	}
}
