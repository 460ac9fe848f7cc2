package config

import (
	"slices"

	"github.com/pathling-sync/pathling-sync/messages"
)

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
