package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Figure is one measured value, with the floor's counterpart when the
// floor measures the same thing.
type Figure struct {
	Name  string
	Label string
	Unit  string
	Value float64
	// Floor is floorbench's value of the same figure in the same run (nil: none).
	Floor *float64
	// LowerIsBetter tells how to read the ratio (for people; the JSON has the number).
	LowerIsBetter bool
}

// Report is one scenario's result.
type Report struct {
	Scenario string
	Params   map[string]any
	Figures  []Figure
	// FloorRaw is floorbench's JSON line; FloorNote says why there is none,
	// or what it ran.
	FloorRaw  map[string]any
	FloorNote string
}

// NewReport starts a report.
func NewReport(scenario string) *Report {
	return &Report{Scenario: scenario, Params: map[string]any{}}
}

// Add appends a figure.
func (r *Report) Add(f Figure) { r.Figures = append(r.Figures, f) }

// MarshalJSON writes {"scenario", "params", "figures": {name: value},
// "floor": {name: value}, "ratio": {name: value/floor}, "floorbench": raw}.
func (r *Report) MarshalJSON() ([]byte, error) {
	figs, floor, ratio := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, f := range r.Figures {
		figs[f.Name] = round(f.Value, 4)
		if f.Floor != nil {
			floor[f.Name] = round(*f.Floor, 4)
			if *f.Floor != 0 {
				ratio[f.Name] = round(f.Value / *f.Floor, 3)
			}
		}
	}
	out := map[string]any{"scenario": r.Scenario, "params": r.Params, "figures": figs}
	if len(floor) > 0 {
		out["floor"], out["ratio"] = floor, ratio
	}
	if r.FloorRaw != nil {
		out["floorbench"] = r.FloorRaw
	}
	if r.FloorNote != "" {
		out["floorNote"] = r.FloorNote
	}
	return json.Marshal(out)
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) {
	var params []string
	for k, v := range r.Params {
		if strings.HasPrefix(k, "redis_commands") {
			continue
		}
		params = append(params, fmt.Sprintf("%s=%v", k, v))
	}
	slices.Sort(params)
	fmt.Fprintf(w, "\n== %s  (%s)\n", r.Scenario, strings.Join(params, " "))
	fmt.Fprintf(w, "  %-52s %14s %12s %8s\n", "figure", "pathling-sync", "floor", "ratio")
	for _, f := range r.Figures {
		label := f.Label
		if f.Unit != "" {
			label += " (" + f.Unit + ")"
		}
		floor, ratio := "", ""
		if f.Floor != nil {
			floor = fmtNum(*f.Floor)
			if *f.Floor != 0 {
				ratio = fmt.Sprintf("%.2f×", f.Value / *f.Floor)
			}
		}
		fmt.Fprintf(w, "  %-52s %14s %12s %8s\n", label, fmtNum(f.Value), floor, ratio)
	}
	if rc, ok := r.Params["redis_commands"].(map[string]float64); ok && len(rc) > 0 {
		var parts []string
		for k, v := range rc {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
		}
		slices.Sort(parts)
		fmt.Fprintf(w, "  Redis commands per unit (sync or answer): %s\n", strings.Join(parts, ", "))
	}
	if r.FloorNote != "" {
		fmt.Fprintf(w, "  floor: %s\n", r.FloorNote)
	}
}

func fmtNum(f float64) string {
	switch {
	case f == 0:
		return "0"
	case f >= 100 || f <= -100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10 || f <= -10:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.3f", f)
}

// Floor runs floorbench, the primitive-floor tool, from its directory
// (`go run . args -nats URL -redis URL`) on the run's servers, and returns
// its JSON line. ok is false (with the reason in note) when no floorbench
// was given or it failed.
func (e *Env) Floor(ctx context.Context, args ...string) (raw map[string]any, note string, ok bool) {
	dir := e.Opts.FloorDir
	if dir == "" {
		return nil, "skipped: floorbench not given (-floor DIR or FLOORBENCH)", false
	}
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		return nil, fmt.Sprintf("skipped: no floorbench in %s", dir), false
	}
	args = append(args, "-nats", e.Servers.NATSURL, "-redis", e.Servers.RedisURL)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", "."}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	note = "floorbench " + strings.Join(args[:len(args)-4], " ")
	if err := cmd.Run(); err != nil {
		return nil, fmt.Sprintf("%s failed: %v: %s", note, err, lastLines(stderr.String(), 5)), false
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &raw); err != nil {
		return nil, fmt.Sprintf("%s: unreadable output: %v", note, err), false
	}
	return raw, note, true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// num reads a number from floorbench's JSON by path ("publish_to_ack_ms.p99").
func num(raw map[string]any, path string) *float64 {
	var cur any = raw
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	if f, ok := cur.(float64); ok {
		return &f
	}
	return nil
}
