package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleValue returns a text for a variable of type t that differs from
// every default, and the value it must produce.
func sampleValue(t *testing.T, typ reflect.Type) (string, any) {
	t.Helper()
	switch {
	case typ == durationType:
		return "7s", 7 * time.Second
	case typ.Kind() == reflect.String:
		return "sample", reflect.ValueOf("sample").Convert(typ).Interface()
	case typ.Kind() == reflect.Bool:
		return "true", true
	case typ.Kind() == reflect.Int:
		return "7", 7
	case typ.Kind() == reflect.Int64:
		return "7", int64(7)
	case typ.Kind() == reflect.Float64:
		return "0.7", 0.7
	case typ == reflect.TypeFor[[]string]():
		return "a, b", []string{"a", "b"}
	case typ == reflect.TypeFor[[]ChainConfig]():
		return `[{"name": "a-to-b", "on": {"target": "a", "types": ["Patient"], "nonEmpty": true}, "request": {"target": "b", "since": "auto", "types": ["Patient"]}}]`,
			[]ChainConfig{{Name: "a-to-b", On: ChainTrigger{Target: "a", Types: []string{"Patient"}, NonEmpty: true},
				Request: ChainRequest{Target: "b", RequestDefaults: RequestDefaults{Since: "auto", Types: []string{"Patient"}}}}}
	case typ == reflect.TypeFor[[]ScheduleConfig]():
		return `[{"name": "n", "cron": "@daily", "catchUp": true}]`, []ScheduleConfig{{Name: "n", Cron: "@daily", CatchUp: true}}
	}
	t.Fatalf("no sample for %s", typ)
	return "", nil
}

// TestEveryEnvVarApplies sets each variable of EnvReference alone and checks
// that exactly its key changed.
func TestEveryEnvVarApplies(t *testing.T) {
	root := reflect.TypeFor[Config]()
	var leaves []leaf
	forEachLeaf(root, nil, nil, func(l leaf) { leaves = append(leaves, l) })
	forEachLeaf(reflect.TypeFor[TargetConfig](), []string{"targets", "<name>"}, nil, func(l leaf) { leaves = append(leaves, l) })
	tested := 0
	for _, l := range leaves {
		key := strings.Join(l.path, ".")
		inTarget := l.path[0] == "targets"
		var names []string
		if inTarget {
			names = []string{EnvPrefix + "TARGETS_PROD_" + envName(l.path[2:])}
		} else {
			names = []string{EnvPrefix + l.envName()}
			if alias := l.field.Tag.Get("env"); alias != "" {
				names = append(names, alias)
			}
		}
		for _, name := range names {
			text, want := sampleValue(t, l.field.Type)
			cfg := Default()
			cfg.Targets = map[string]TargetConfig{"prod": DefaultTarget()}
			if errs := applyEnv(cfg, func(k string) string {
				if k == name {
					return text
				}
				return ""
			}); len(errs) > 0 {
				t.Errorf("%s=%s: %v", name, text, errs)
				continue
			}
			var got reflect.Value
			if inTarget {
				got = reflect.ValueOf(cfg.Targets["prod"]).FieldByIndex(l.index)
			} else {
				got = reflect.ValueOf(*cfg).FieldByIndex(l.index)
			}
			if !reflect.DeepEqual(got.Interface(), want) {
				t.Errorf("%s=%s: %s = %#v, want %#v", name, text, key, got.Interface(), want)
			}
			tested++
		}
	}
	if tested != len(leaves)+2 { // +2: NATS_URL and REDIS_URL
		t.Errorf("tested %d variables for %d leaves", tested, len(leaves))
	}
}

func TestUpperSnake(t *testing.T) {
	for in, want := range map[string]string{
		"maxWorkers": "MAX_WORKERS", "instanceId": "INSTANCE_ID", "allowedExportUrls": "ALLOWED_EXPORT_URLS",
		"lockTTL": "LOCK_TTL", "url": "URL", "insecureSkipVerify": "INSECURE_SKIP_VERIFY", "kid": "KID",
	} {
		if got := upperSnake(in); got != want {
			t.Errorf("upperSnake(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		720 * time.Hour: "720h", 2 * time.Minute: "2m", 90 * time.Second: "1m30s", 5 * time.Second: "5s",
		0: "0s", 100 * time.Millisecond: "100ms", 90 * time.Minute: "1h30m", time.Hour + time.Second: "1h0m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
