package handlers

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// The keys built in place are those the concatenations of before built,
// for any order of the values and with the request's slices left as given.
func TestKeysAsBefore(t *testing.T) {
	oldJoin := func(values []string, sep string) string {
		v := slices.Clone(values)
		slices.Sort(v)
		return strings.Join(v, sep)
	}
	oldKey := func(p ImportParams) string {
		key := p.ExportURL + "|types=" + oldJoin(p.Types, ",") + "|filters=" + oldJoin(p.TypeFilters, "&")
		if len(p.Elements) > 0 {
			key += "|elements=" + oldJoin(p.Elements, ",")
		}
		if len(p.IncludeAssociatedData) > 0 {
			key += "|associated=" + oldJoin(p.IncludeAssociatedData, ",")
		}
		return key
	}
	oldShape := func(p ImportParams) string {
		kind := "full"
		if p.Since != nil {
			kind = "incr"
		}
		types := oldJoin(p.Types, ",")
		if types == "" {
			types = "*"
		}
		if len(kind)+1+len(types) > 64 {
			sum := sha256.Sum256([]byte(types))
			types = "h" + hex.EncodeToString(sum[:12])
		}
		return kind + ":" + types
	}
	words := strings.Fields("Patient Observation Condition Encounter Procedure MedicationRequest DiagnosticReport id status Patient?active=true Observation?code=x Latest Relationship")
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() []string {
		n := r.IntN(8)
		if n == 0 && r.IntN(2) == 0 {
			return nil
		}
		v := make([]string, n)
		for i := range v {
			v[i] = words[r.IntN(len(words))]
		}
		return v
	}
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 2000 {
		p := ImportParams{ExportURL: "http://src/fhir", Types: pick(), TypeFilters: pick(), Elements: pick(), IncludeAssociatedData: pick()}
		if r.IntN(2) == 0 {
			p.Since = &since
		}
		types := slices.Clone(p.Types)
		if got, want := WatermarkKey(p), oldKey(p); got != want {
			t.Fatalf("WatermarkKey(%+v) = %q, want %q", p, got, want)
		}
		if got, want := DurationShape(p), oldShape(p); got != want {
			t.Fatalf("DurationShape(%v) = %q, want %q", p.Types, got, want)
		}
		if !slices.Equal(p.Types, types) {
			t.Fatalf("types reordered: %v, were %v", p.Types, types)
		}
	}
}
