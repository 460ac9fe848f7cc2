package faults

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// row is one scenario's line of the table.
type row struct {
	scenario      string
	requests      int
	outcomesOK    int
	dup, missing  int
	jobs          string
	maxConcurrent int
	watermark     string
	data          string
	secrets       int
	result        string
	notes         []string
	skipped       string
	took          time.Duration
}

var tableHeader = []string{"scenario", "requests", "outcomes ok", "dup/missing outcomes", "Pathling jobs",
	"max concurrent imports", "watermark ok", "data equal", "secrets found", "result"}

func (r *row) cells() []string {
	if r.skipped != "" {
		return []string{r.scenario, "-", "-", "-", "-", "-", "-", "-", "-", "SKIP: " + r.skipped}
	}
	return []string{r.scenario, fmt.Sprint(r.requests), fmt.Sprint(r.outcomesOK),
		fmt.Sprintf("%d/%d", r.dup, r.missing), r.jobs, fmt.Sprint(r.maxConcurrent), r.watermark, r.data,
		fmt.Sprint(r.secrets), r.result}
}

// table renders the rows as a Markdown table.
func table(rows []*row) string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	line(tableHeader)
	sep := make([]string, len(tableHeader))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range rows {
		cells := r.cells()
		for i, c := range cells {
			c = strings.ReplaceAll(strings.ReplaceAll(c, "|", "/"), "\n", " ")
			if len(c) > 200 {
				c = c[:197] + "..."
			}
			cells[i] = c
		}
		line(cells)
	}
	return b.String()
}

// finish fills the scenario's row from what the harness saw and checks the promises every
// scenario shares: exactly one outcome per request, at most one import at a time, watermarks
// never backwards and never past the newest export, Pathling equal to the source after the final
// sync, no secret anywhere.
func (h *harness) finish(start time.Time) {
	r := h.row
	r.took = time.Since(start).Round(time.Second)
	if h.js == nil { // the world never came up
		r.result = "FAIL: setup"
		if len(r.notes) > 0 {
			r.result += ": " + r.notes[0]
		}
		return
	}
	h.samples.stop()
	if h.rdb != nil {
		h.samples.sample(h.ctx, h)
	}
	if err := h.refresh(); err != nil {
		h.expect(false, "read the stream: %v", err)
	}
	outs := h.outcomes()
	h.mu.Lock()
	r.requests = len(h.requested)
	for _, id := range h.requested {
		switch n := len(outs[id]); {
		case n == 1:
			r.outcomesOK++
		case n == 0:
			r.missing++
		default:
			r.dup++
		}
	}
	var bad []string
	for _, id := range h.requested {
		if n := len(outs[id]); n != 1 {
			bad = append(bad, fmt.Sprintf("%s: %d outcomes", id, n))
		}
	}
	h.mu.Unlock()
	h.expect(len(bad) == 0, "not exactly one outcome per request: %s", strings.Join(bad, "; "))
	if n, err := h.jobsCreated(); err == nil {
		r.jobs = fmt.Sprint(n)
	} else {
		r.jobs = "?"
	}
	s := &h.samples
	s.mu.Lock()
	r.maxConcurrent = s.maxRunning
	switch {
	case len(s.backwards) > 0:
		r.watermark = "BACKWARDS"
	case len(s.pastData) > 0:
		r.watermark = "PAST DATA"
	default:
		r.watermark = fmt.Sprintf("ok (%d moves)", s.moves)
	}
	backwards, pastData := s.backwards, s.pastData
	s.mu.Unlock()
	h.expect(r.maxConcurrent <= 1, "%d Pathling imports ran at once", r.maxConcurrent)
	h.expect(len(backwards) == 0, "watermark moved backwards: %s", strings.Join(backwards, "; "))
	h.expect(len(pastData) == 0, "%s", strings.Join(pastData, "; "))
	switch {
	case !h.dataChecked:
		r.data = "-"
	case h.dataEqual:
		r.data = "yes " + h.dataNote
	default:
		r.data = "NO " + h.dataNote
	}
	h.expect(!h.dataChecked || h.dataEqual, "Pathling differs from the source after the final sync: %s resources equal", h.dataNote)
	hits := h.scanSecrets()
	r.secrets = len(hits)
	h.expect(len(hits) == 0, "secrets found in: %s", strings.Join(hits, ", "))
	if h.t.Failed() {
		r.result = "FAIL"
		if len(r.notes) > 0 {
			r.result += ": " + r.notes[0]
		}
	} else {
		r.result = "PASS"
	}
}

// TestFaults runs the selected scenarios, one world each, and prints the table.
func TestFaults(t *testing.T) {
	sel := os.Getenv(envSelect)
	if sel == "" {
		t.Skipf("fault suite: set %s=all|ci|<names> (make faults, make faults-ci)", envSelect)
	}
	bins := buildBinaries(t)
	var rows []*row
	suiteStart := time.Now()
	for _, sc := range scenarios() {
		if !selected(sel, sc) {
			continue
		}
		r := &row{scenario: sc.name}
		rows = append(rows, r)
		t.Run(sc.name, func(t *testing.T) {
			h := newHarness(t, bins, r)
			start := time.Now()
			defer func() {
				if t.Skipped() && r.skipped == "" {
					r.skipped = "see test log"
				}
				if r.skipped == "" {
					h.finish(start)
				}
				t.Logf("%s: %s (%s)", sc.name, r.result, r.took)
			}()
			sc.run(h)
		})
	}
	out := table(rows) + fmt.Sprintf("\n%d scenarios in %s\n", len(rows), time.Since(suiteStart).Round(time.Second))
	t.Log("\n" + out)
	if path := os.Getenv(envTable); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Errorf("write table: %v", err)
		}
	}
}

func selected(sel string, sc scenario) bool {
	switch sel {
	case "all", "1":
		return true
	case "ci":
		return sc.ci
	}
	for _, name := range strings.Split(sel, ",") {
		if strings.TrimSpace(name) == sc.name {
			return true
		}
	}
	return false
}
