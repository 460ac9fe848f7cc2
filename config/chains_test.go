package config_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/config"
)

// twoTargets are "default" (with a default source) and "replica" (without).
const twoTargets = `
targets:
  default:
    pathling:
      url: http://pathling:8080/fhir
    defaults:
      exportUrl: https://source/fhir
  replica:
    pathling:
      url: http://replica:8080/fhir
    allowedExportUrls: [https://source/fhir, http://pathling:8080/fhir]
  third:
    pathling:
      url: http://third:8080/fhir
    defaults:
      exportUrl: https://source/fhir
`

func TestChainsFromYAML(t *testing.T) {
	cfg := mustLoad(t, twoTargets+`
chains:
  - name: default-to-replica
    on: {target: default, types: [Patient], nonEmpty: true}
    request:
      target: replica
      exportUrl: https://source/fhir
      since: auto
      saveMode: merge
      types: [Patient]
      timeout: 30m
`, nil)
	want := []config.ChainConfig{{
		Name: "default-to-replica",
		On:   config.ChainTrigger{Target: "default", Types: []string{"Patient"}, NonEmpty: true},
		Request: config.ChainRequest{Target: "replica", RequestDefaults: config.RequestDefaults{
			ExportURL: "https://source/fhir", Since: "auto", SaveMode: "merge", Types: []string{"Patient"}, Timeout: 30 * time.Minute,
		}},
	}}
	if !reflect.DeepEqual(cfg.Chains, want) {
		t.Errorf("chains = %+v\nwant %+v", cfg.Chains, want)
	}
	if got := cfg.Chains[0].Request.Request(); got.Timeout != "30m" || got.Since != "auto" {
		t.Errorf("request fields = %+v", got)
	}
}

func TestChainsFromEnvironment(t *testing.T) {
	cfg := mustLoad(t, twoTargets, map[string]string{
		"PATHLING_SYNC_CHAINS": `[{name: d2r, on: {target: default}, request: {target: replica, exportUrl: "https://source/fhir"}}]`,
	})
	if len(cfg.Chains) != 1 || cfg.Chains[0].Name != "d2r" || cfg.Chains[0].Request.ExportURL != "https://source/fhir" {
		t.Errorf("chains = %+v", cfg.Chains)
	}
	err := loadErr(t, twoTargets, map[string]string{"PATHLING_SYNC_CHAINS": `[{name: x, request: {target: replica, exportURL: "https://s"}}]`})
	if !strings.Contains(err.Error(), "PATHLING_SYNC_CHAINS[0].request.exportURL: unknown key (did you mean exportUrl?)") {
		t.Errorf("unknown key in an inlined struct: %v", err)
	}
}

func TestChainValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chains string
		want   []string
	}{
		{"names and targets", `
  - {on: {target: nope}, request: {target: replica}}
  - {name: "a b", on: {target: default}, request: {target: third}}
  - {name: ok, on: {target: default}, request: {target: third}}
  - {name: ok, on: {target: default}, request: {target: third}}
  - {name: empty}
`, []string{
			"chains[0].name: required",
			`chains[0].on.target: "nope" is not a configured target (targets: [default replica third])`,
			`chains[0].request.exportUrl: required: target "replica" has no defaults.exportUrl`,
			`chains[1].name: "a b" must match [A-Za-z0-9_-]{1,64}`,
			`chains[3].name: "ok" is used by another chain rule`,
			"chains[4].on.target: required",
			"chains[4].request.target: required",
		}},
		{"request fields", `
  - name: bad
    on: {target: default, types: [patient]}
    request: {target: third, saveMode: merj, since: auto, until: "2025-01-01T00:00:00Z", timeout: -1s, concurrency: wait}
`, []string{
			`chains[0].on.types[0]: "patient" is not a FHIR resource type name`,
			`chains[0].request.saveMode: "merj" is not one of merge, overwrite, append, ignore, error`,
			`chains[0].request.until: cannot be combined with since "auto"`,
			"chains[0].request.timeout: must not be negative",
			`chains[0].request.concurrency: "wait" is not one of forbid, queue`,
		}},
		{"self", `
  - {name: self, on: {target: default}, request: {target: default}}
`, []string{`chains[0].request.target: "default" is the rule's own on.target`}},
		{"cycle", `
  - {name: there, on: {target: default}, request: {target: third}}
  - {name: back, on: {target: third}, request: {target: default}, allowCycle: true}
`, []string{`chains[0].request.target: rule "there" is part of a cycle of chain rules`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadErr(t, twoTargets+"chains:"+tc.chains, nil)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, strings.ReplaceAll(err.Error(), "; ", "\n"))
				}
			}
			if strings.Contains(err.Error(), "chains[1].") && tc.name == "cycle" {
				t.Errorf("the rule with allowCycle was rejected: %v", err)
			}
		})
	}

	// Cycles are fine when every rule of them allows it, and a chain of
	// rules without a cycle needs nothing.
	mustLoad(t, twoTargets+`
chains:
  - {name: there, on: {target: default}, request: {target: third}, allowCycle: true}
  - {name: back, on: {target: third, nonEmpty: true}, request: {target: default}, allowCycle: true}
  - {name: self, on: {target: replica, nonEmpty: true}, request: {target: replica, exportUrl: "https://source/fhir", since: auto}, allowCycle: true}
`, nil)
	mustLoad(t, twoTargets+`
chains:
  - {name: one, on: {target: default}, request: {target: third}}
  - {name: two, on: {target: third}, request: {target: replica, exportUrl: "https://source/fhir"}}
`, nil)
}

func TestScheduleRequestValidation(t *testing.T) {
	err := loadErr(t, twoTargets+`
    schedules:
      - {name: n, cron: "@daily", request: {saveMode: wipe, types: [Patient, Patient]}}
      - {name: m, cron: "CRON_TZ=UTC"}
`, nil)
	for _, w := range []string{
		`targets.third.schedules[0].request.saveMode: "wipe" is not one of`,
		`targets.third.schedules[0].request.types[1]: "Patient" is listed more than once`,
		`targets.third.schedules[1].cron: "CRON_TZ=UTC" is not a 5-field cron expression`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%s", w, strings.ReplaceAll(err.Error(), "; ", "\n"))
		}
	}
	err = loadErr(t, strings.Replace(twoTargets, "    allowedExportUrls:", "    schedules: [{name: n, cron: \"@daily\"}]\n    allowedExportUrls:", 1), nil)
	if !strings.Contains(err.Error(), "targets.replica.schedules[0].request.exportUrl: required: the target has no defaults.exportUrl") {
		t.Errorf("schedule without a source: %v", err)
	}
	cfg := mustLoad(t, twoTargets+`
    schedules:
      - {name: nightly-full, cron: "0 2 * * *", request: {saveMode: overwrite}}
`, nil)
	third, _ := cfg.Target("third")
	if got := third.Schedules[0].Request.SaveMode; got != "overwrite" {
		t.Errorf("schedule request saveMode = %q", got)
	}
}
