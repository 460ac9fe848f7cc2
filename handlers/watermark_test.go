package handlers_test

import (
	"context"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// The parameters that narrow an export are part of the watermark key, and
// a sync without elements or associated data keeps the key it had before
// they were (so watermarks stored before an upgrade are still read).
func TestWatermarkKey(t *testing.T) {
	const url = "https://ehr.example.org/fhir"
	cases := []struct {
		name string
		p    handlers.ImportParams
		want string
	}{
		{"everything", handlers.ImportParams{ExportURL: url},
			url + "|types=|filters="},
		{"types and filters, as before elements were part of the key", handlers.ImportParams{
			ExportURL: url, Types: []string{"Patient", "Observation"},
			TypeFilters: []string{"Patient?active=true", "Observation?status=final"}},
			url + "|types=Observation,Patient|filters=Observation?status=final&Patient?active=true"},
		{"elements, sorted", handlers.ImportParams{ExportURL: url, Types: []string{"Observation"},
			Elements: []string{"subject", "id"}},
			url + "|types=Observation|filters=|elements=id,subject"},
		{"associated data, sorted", handlers.ImportParams{ExportURL: url,
			IncludeAssociatedData: []string{"RelevantProvenance", "LatestProvenanceResources"}},
			url + "|types=|filters=|associated=LatestProvenanceResources,RelevantProvenance"},
		{"both", handlers.ImportParams{ExportURL: url, Elements: []string{"id"}, IncludeAssociatedData: []string{"RelevantProvenance"}},
			url + "|types=|filters=|elements=id|associated=RelevantProvenance"},
		{"not narrowing: save mode, since and until", handlers.ImportParams{ExportURL: url, SaveMode: "overwrite",
			Since: new(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)), Until: new(time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC))},
			url + "|types=|filters="},
	}
	for _, c := range cases {
		if got := handlers.WatermarkKey(c.p); got != c.want {
			t.Errorf("%s: key %q, want %q", c.name, got, c.want)
		}
	}
	in := []string{"b", "a"}
	handlers.WatermarkKey(handlers.ImportParams{Types: in, Elements: in})
	if in[0] != "b" {
		t.Error("WatermarkKey sorted its caller's slice")
	}
}

// Issue #8 item 2: an Observation sync of ids only must not move the
// watermark that full Observation syncs read, or their next since "auto"
// run would skip everything else that changed in between.
func TestElementsSyncHasItsOwnWatermark(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	obs := []string{"Observation"}

	e.request("t1", "obs-full", req{"types": obs})
	full := e.outcomes.of(t, "obs-full", waitLong).completedBody(t)

	e.request("t1", "obs-ids", req{"types": obs, "elements": []string{"id"}, "since": "auto"})
	ids := e.outcomes.of(t, "obs-ids", waitLong).completedBody(t)
	if ids.Since != "" {
		t.Fatalf("the elements sync started from %q, the full Observation sync's watermark; want a full export (its own key has none)", ids.Since)
	}

	e.request("t1", "obs-auto", req{"types": obs, "since": "auto"})
	auto := e.outcomes.of(t, "obs-auto", waitLong).completedBody(t)
	if auto.Since != full.Watermark {
		t.Fatalf("since auto = %q, want the full Observation sync's watermark %q (the elements sync moved it?)", auto.Since, full.Watermark)
	}

	e.request("t1", "assoc-auto", req{"types": obs, "includeAssociatedData": []string{"RelevantProvenance"}, "since": "auto"})
	if assoc := e.outcomes.of(t, "assoc-auto", waitLong).completedBody(t); assoc.Since != "" {
		t.Fatalf("an includeAssociatedData sync started from %q; want a full export (its own key has none)", assoc.Since)
	}
}

// A watermark stored before elements and associated data were part of the
// key is still what since "auto" reads after the upgrade.
func TestWatermarkStoredBeforeUpgradeIsRead(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	stored := time.Date(2026, 1, 15, 1, 58, 0, 114e6, time.UTC)
	lease, err := e.store.Acquire(ctx, handlers.AcquireRequest{Target: "t1", RequestID: "before-upgrade", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// The key exactly as the previous release wrote it.
	if err := e.store.CommitWatermark(ctx, lease, e.exportURL()+"|types=Observation,Patient|filters=", stored); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	e.request("t1", "after-upgrade", req{"types": []string{"Patient", "Observation"}, "since": "auto"})
	c := e.outcomes.of(t, "after-upgrade", waitLong).completedBody(t)
	if c.Since != messages.FormatInstant(stored) {
		t.Fatalf("since auto = %q, want the watermark stored before the upgrade %s", c.Since, messages.FormatInstant(stored))
	}
}

// A run moves the watermark only when what it imported covers everything
// from the stored watermark (or from the beginning) up to the new value:
// an explicit since later than the stored watermark, or any explicit since
// when none is stored, would leave a gap that since "auto" then skips.
func TestExplicitSinceMovesWatermarkOnlyWithoutGap(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start(e.js, e.syncer(syncerOptions{}), 0)
	instant := func(t *testing.T, s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("watermark %q: %v", s, err)
		}
		return v
	}

	t.Run("no watermark stored", func(t *testing.T) {
		patients := []string{"Patient"}
		e.request("t1", "p-window", req{"types": patients, "since": "2025-01-01T00:00:00Z"})
		w := e.outcomes.of(t, "p-window", waitLong).completedBody(t)
		if w.Watermark != "" {
			t.Fatalf("SyncCompleted watermark %q after a since-only sync with no stored watermark; want none", w.Watermark)
		}
		e.request("t1", "p-auto", req{"types": patients, "since": "auto"})
		if a := e.outcomes.of(t, "p-auto", waitLong).completedBody(t); a.Since != "" {
			t.Fatalf("since auto = %q: a window sync set the watermark, everything before 2025 would be skipped", a.Since)
		}
	})

	t.Run("since later than the stored watermark", func(t *testing.T) {
		e.request("t1", "full", req{})
		full := e.outcomes.of(t, "full", waitLong).completedBody(t)
		e.request("t1", "late", req{"since": messages.FormatInstant(time.Now())})
		late := e.outcomes.of(t, "late", waitLong).completedBody(t)
		if late.Watermark != full.Watermark {
			t.Fatalf("SyncCompleted watermark %q, want the unmoved stored %q", late.Watermark, full.Watermark)
		}
		e.request("t1", "auto", req{"since": "auto"})
		if a := e.outcomes.of(t, "auto", waitLong).completedBody(t); a.Since != full.Watermark {
			t.Fatalf("since auto = %q, want %q: the gap before the late since would be skipped", a.Since, full.Watermark)
		}
	})

	t.Run("since not after the stored watermark", func(t *testing.T) {
		e.request("t1", "e-full", req{"types": []string{"Encounter"}})
		full := e.outcomes.of(t, "e-full", waitLong).completedBody(t)
		earlier := instant(t, full.Watermark).Add(-time.Hour)
		e.request("t1", "e-early", req{"types": []string{"Encounter"}, "since": messages.FormatInstant(earlier)})
		early := e.outcomes.of(t, "e-early", waitLong).completedBody(t)
		if !instant(t, early.Watermark).After(instant(t, full.Watermark)) {
			t.Fatalf("watermark %s did not move past %s", early.Watermark, full.Watermark)
		}
		e.request("t1", "e-auto", req{"types": []string{"Encounter"}, "since": "auto"})
		if a := e.outcomes.of(t, "e-auto", waitLong).completedBody(t); a.Since != early.Watermark {
			t.Fatalf("since auto = %q, want %q", a.Since, early.Watermark)
		}
	})
}
