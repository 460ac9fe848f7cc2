package config

import (
	"fmt"
	"slices"

	"github.com/pathling-sync/pathling-sync/clients/pathling"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// NormalizeExportURL turns an export URL given either as a source's FHIR base
// (https://s/fhir) or as its $export endpoint (https://s/fhir/$export, as in
// the seed script) into what a Pathling of the given style expects:
// ExportURLBase gives the base, ExportURLEndpoint the endpoint. It fails on
// an unknown style and on what the Pathling client refuses (not absolute
// http(s), user info, fragment).
func NormalizeExportURL(style, raw string) (string, error) {
	switch style {
	case ExportURLBase, "":
		return pathling.NormalizeExportURL(raw, pathling.ExportURLBase)
	case ExportURLEndpoint:
		return pathling.NormalizeExportURL(raw, pathling.ExportURLEndpoint)
	}
	return "", fmt.Errorf("export URL style %q is not %s or %s", style, ExportURLBase, ExportURLEndpoint)
}

// Backoff returns the cadence as the handler's type.
func (b BackoffConfig) Backoff() handlers.Backoff {
	return handlers.Backoff{Initial: b.Initial, Factor: b.Factor, Max: b.Max, Jitter: b.Jitter}
}

// Request returns the defaults as the SyncRequested fields they fill.
func (d RequestDefaults) Request() messages.SyncRequested {
	r := messages.SyncRequested{
		ExportURL:             d.ExportURL,
		SaveMode:              d.SaveMode,
		Types:                 slices.Clone(d.Types),
		Since:                 d.Since,
		Until:                 d.Until,
		TypeFilters:           slices.Clone(d.TypeFilters),
		Elements:              slices.Clone(d.Elements),
		IncludeAssociatedData: slices.Clone(d.IncludeAssociatedData),
		Concurrency:           d.Concurrency,
	}
	if d.Timeout > 0 {
		r.Timeout = formatDuration(d.Timeout)
	}
	return r
}

// AllowedURLs returns the source URLs requests may name, normalised for the
// target's export URL style: AllowedExportURLs plus the default export URL,
// without duplicates. URLs that do not parse are left out (Validate
// rejects them).
func (t TargetConfig) AllowedURLs() []string {
	var out []string
	add := func(raw string) {
		if raw == "" {
			return
		}
		u, err := NormalizeExportURL(t.Pathling.ExportURLStyle, raw)
		if err == nil && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	for _, a := range t.AllowedExportURLs {
		add(a)
	}
	add(t.Defaults.ExportURL)
	return out
}

// HandlerTarget returns the target as the sync handler takes it, driving p
// (the Pathling client cmd builds from t.Pathling). Export URLs are
// normalised for the target's export URL style, the allowlist included.
func (t TargetConfig) HandlerTarget(p handlers.Pathling) handlers.Target {
	style := t.Pathling.ExportURLStyle
	return handlers.Target{
		Name:              t.Name,
		Pathling:          p,
		AllowedExportURLs: t.AllowedURLs(),
		NormalizeExportURL: func(raw string) (string, error) {
			return NormalizeExportURL(style, raw)
		},
		Defaults:     t.Defaults.Request(),
		Timeout:      t.Timeout,
		Overlap:      t.Overlap,
		Poll:         t.Poll.Backoff(),
		Retry:        t.Retry.Backoff(),
		MaxJobLosses: t.MaxJobLosses,
		KeepJobs:     t.KeepJobs,
	}
}
