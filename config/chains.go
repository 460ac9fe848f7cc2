package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pathling-sync/pathling-sync/messages"
)

// ChainConfig is a rule: when a sync of On.Target completes (and matches
// On), request a sync of Request.Target with Request's fields. For example a
// second Pathling kept in step with the first with since: auto.
type ChainConfig struct {
	// Name identifies the rule: it is part of the ids of the requests it
	// publishes ("chain:<name>:<completed request id>") and their
	// requestedBy ("chain:<name>").
	Name    string       `yaml:"name"`
	On      ChainTrigger `yaml:"on"`
	Request ChainRequest `yaml:"request"`
	// AllowCycle lets the rule be part of a cycle of rules (a rule from a
	// target to itself, or A→B with B→A), which Validate otherwise rejects
	// because it would request syncs forever. A cycle that ends, e.g.
	// through nonEmpty, may set it on each of its rules.
	AllowCycle bool `yaml:"allowCycle"`
}

// ChainTrigger says which SyncCompleted events fire a chain rule.
type ChainTrigger struct {
	// Target is the target whose SyncCompleted events fire the rule.
	Target string `yaml:"target"`
	// Types, when set, makes the rule fire only when the completed sync
	// covered every one of them: it named each in its types, or named no
	// types (all types).
	Types []string `yaml:"types"`
	// NonEmpty makes the rule fire only when the sync imported something:
	// not an empty incremental export (empty: true), not zero files.
	NonEmpty bool `yaml:"nonEmpty"`
}

// ChainRequest is the SyncRequested a chain rule publishes: its target and
// fields (empty ones take the target's defaults in the service). The
// correlation id is carried from the completed sync (its request id when it
// had none), and requestedBy is "chain:<rule name>".
type ChainRequest struct {
	Target          string `yaml:"target"`
	RequestDefaults `yaml:",inline"`
}

func (c *Config) validateChains(errs *Errors) {
	seen := map[string]bool{}
	for i, ch := range c.Chains {
		p := fmt.Sprintf("chains[%d].", i)
		switch {
		case ch.Name == "":
			errs.add(p+"name", "required")
		case !messages.ValidTarget(ch.Name):
			errs.add(p+"name", fmt.Sprintf("%q must match [A-Za-z0-9_-]{1,64}", ch.Name))
		case seen[ch.Name]:
			errs.add(p+"name", fmt.Sprintf("%q is used by another chain rule", ch.Name))
		}
		seen[ch.Name] = true
		c.checkTargetRef(errs, p+"on.target", ch.On.Target)
		if err := (messages.SyncRequested{Types: ch.On.Types}).Validate(); err != nil {
			addRequestErrors(errs, p+"on.", err)
		}
		to, toOK := c.checkTargetRef(errs, p+"request.target", ch.Request.Target)
		validateRequestFields(errs, p+"request.", ch.Request.RequestDefaults)
		if toOK && ch.Request.ExportURL == "" && to.Defaults.ExportURL == "" {
			errs.add(p+"request.exportUrl", fmt.Sprintf("required: target %q has no defaults.exportUrl", ch.Request.Target))
		}
		if ch.On.Target != "" && ch.On.Target == ch.Request.Target && !ch.AllowCycle {
			errs.add(p+"request.target", fmt.Sprintf("%q is the rule's own on.target: every sync would request another (set allowCycle if it ends)", ch.Request.Target))
		} else if !ch.AllowCycle && c.chainOnCycle(i) {
			errs.add(p+"request.target", fmt.Sprintf("rule %q is part of a cycle of chain rules that would request syncs forever (set allowCycle on each of its rules if it ends)", ch.Name))
		}
	}
}

// checkTargetRef checks that name is a configured target.
func (c *Config) checkTargetRef(errs *Errors, path, name string) (TargetConfig, bool) {
	if name == "" {
		errs.add(path, "required")
		return TargetConfig{}, false
	}
	t, ok := c.Targets[name]
	if !ok {
		errs.add(path, fmt.Sprintf("%q is not a configured target (targets: %v)", name, c.TargetNames()))
	}
	return t, ok
}

// chainOnCycle reports whether rule i can reach itself: its request's target
// fires rules whose requests' targets fire ... rule i again.
func (c *Config) chainOnCycle(i int) bool {
	start := c.Chains[i]
	visited := map[string]bool{}
	frontier := []string{start.Request.Target}
	for len(frontier) > 0 {
		target := frontier[0]
		frontier = frontier[1:]
		if target == start.On.Target {
			return true
		}
		if visited[target] {
			continue
		}
		visited[target] = true
		for _, r := range c.Chains {
			if r.On.Target == target && r.Request.Target != "" {
				frontier = append(frontier, r.Request.Target)
			}
		}
	}
	return false
}

// validateRequestFields checks SyncRequested fields given in configuration
// (a target's defaults, a schedule's or a chain rule's request) by the
// rules the service applies to a request.
func validateRequestFields(errs *Errors, p string, d RequestDefaults) {
	if err := d.Request().Validate(); err != nil {
		addRequestErrors(errs, p, err)
	}
	if d.Timeout < 0 {
		errs.add(p+"timeout", "must not be negative")
	}
	if d.Since == messages.SinceAuto && d.Until != "" {
		errs.add(p+"until", `cannot be combined with since "auto"`)
	}
}

// addRequestErrors adds a SyncRequested validation error under prefix p.
func addRequestErrors(errs *Errors, p string, err error) {
	var ves messages.ValidationErrors
	if errors.As(err, &ves) {
		for _, ve := range ves {
			errs.add(p+ve.Field, ve.Message)
		}
		return
	}
	errs.add(strings.TrimSuffix(p, "."), err.Error())
}
