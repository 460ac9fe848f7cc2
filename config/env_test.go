package config_test

import (
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pathling-sync/pathling-sync/config"
)

// yamlLeaves lists the dotted paths of a marshalled config's leaves: scalars
// and lists (a list is set as a whole), with every target's name replaced by
// <name>.
func yamlLeaves(n *yaml.Node, path string, out *[]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		yamlLeaves(n.Content[0], path, out)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if path == "targets" {
				key = "<name>"
			}
			p := key
			if path != "" {
				p = path + "." + key
			}
			yamlLeaves(n.Content[i+1], p, out)
		}
	default:
		*out = append(*out, path)
	}
}

func TestEnvReferenceCoversEveryLeaf(t *testing.T) {
	cfg := config.Default()
	tg := config.DefaultTarget()
	tg.Schedules = []config.ScheduleConfig{{Name: "n", Cron: "@daily"}}
	cfg.Targets = map[string]config.TargetConfig{"x": tg}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	yamlLeaves(&doc, "", &leaves)
	if len(leaves) < 60 {
		t.Fatalf("only %d leaves found: %v", len(leaves), leaves)
	}

	ref := config.EnvReference()
	keys := map[string]bool{}
	names := map[string]bool{}
	for _, v := range ref {
		if names[v.Name] {
			t.Errorf("%s listed twice", v.Name)
		}
		names[v.Name] = true
		keys[v.Key] = true
		if v.Help == "" {
			t.Errorf("%s has no help", v.Name)
		}
	}
	for _, l := range leaves {
		if !keys[l] {
			t.Errorf("key %s has no environment variable", l)
		}
	}
	for k := range keys {
		if k != "targets" && !slices.Contains(leaves, k) && !strings.HasPrefix(k, "targets.default.") {
			t.Errorf("EnvReference lists key %s, which is not in the configuration", k)
		}
	}
	for _, want := range []string{"NATS_URL", "REDIS_URL", "PATHLING_SYNC_ADMIN_ADDR", "PATHLING_SYNC_NATS_CONSUMER_MAX_WORKERS",
		"PATHLING_SYNC_REDIS_KEY_PREFIX", "PATHLING_SYNC_TARGETS_<NAME>_PATHLING_URL",
		"PATHLING_SYNC_TARGETS_<NAME>_PATHLING_AUTH_CLIENT_SECRET_FILE", "PATHLING_SYNC_TARGETS",
		"PATHLING_URL", "SOURCE_EXPORT_URL", "SAVE_MODE", "TIMEOUT", "RESOURCE_TYPES", "SINCE"} {
		if !names[want] {
			t.Errorf("EnvReference lacks %s", want)
		}
	}
	defaults := map[string]string{}
	for _, v := range ref {
		defaults[v.Name] = v.Default
	}
	for name, want := range map[string]string{
		"PATHLING_SYNC_NATS_STREAM_MAX_AGE":        "720h",
		"PATHLING_SYNC_NATS_STREAM_DUPLICATES":     "2m",
		"PATHLING_SYNC_NATS_CONSUMER_MAX_DELIVER":  "-1",
		"PATHLING_SYNC_TARGETS_<NAME>_POLL_FACTOR": "1.5",
		"PATHLING_SYNC_TARGETS_<NAME>_TIMEOUT":     "2h",
		"PATHLING_SYNC_TARGETS_<NAME>_KEEP_JOBS":   "false",
		"PATHLING_SYNC_SERVICE_INSTANCE_ID":        "(host name)",
		"REDIS_URL":                                "redis://127.0.0.1:6379/0",
		"PATHLING_SYNC_ADMIN_ADDR":                 ":9464",
	} {
		if got := defaults[name]; got != want {
			t.Errorf("default of %s = %q, want %q", name, got, want)
		}
	}
}
