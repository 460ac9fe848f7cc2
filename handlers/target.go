package handlers

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Target is one configured Pathling instance and how syncs into it run.
// Targets come from configuration, never from events.
type Target struct {
	Name     string
	Pathling Pathling
	// AllowedExportURLs are the source URLs a request may name (prefix match
	// at a path boundary, like Pathling's own allowableExportUrls), in the
	// form Pathling.NormalizeExportURL gives. Empty means only the default
	// export URL.
	AllowedExportURLs []string
	// Defaults fill the request fields an event leaves empty
	// (exportUrl, saveMode, types, since, until, typeFilters, elements,
	// includeAssociatedData, concurrency, timeout).
	Defaults messages.SyncRequested
	Timeout  time.Duration // whole sync; default 2h
	Overlap  time.Duration // watermark = first kick-off − overlap (config's default: 2m)
	Poll     Backoff       // status poll cadence; default 5s ×1.5 ≤ 60s, 10% jitter
	// PollPolicy is how polls are planned: PollHistory (default) from the
	// durations of the target's past jobs of the same shape once there are
	// enough of them (Config.Durations), PollSeed always by Poll.
	PollPolicy string
	// PollFloor is the shortest wait a history plan may use; default 1s
	// (at most Poll.Initial).
	PollFloor    time.Duration
	Retry        Backoff // after a retryable failure; default 30s ×2 ≤ 5m
	DeleteRetry  Backoff // between tries of a job's DELETE; default 1s ×2 ≤ 4s
	MaxJobLosses int     // 404s of our job before job_lost; default 3
	KeepJobs     bool    // false: DELETE the Pathling job after its final result

	// allowed are the allowed source URLs parsed (those that parse), set
	// by New: a request's export URL is checked against them without
	// parsing them again.
	allowed       []*url.URL
	allowedParsed bool
}

// Poll policies (Target.PollPolicy).
const (
	PollHistory = "history"
	PollSeed    = "seed"
)

// Backoff is a capped exponential cadence with jitter.
type Backoff struct {
	Initial time.Duration
	Factor  float64
	Max     time.Duration
	Jitter  float64 // ± fraction, 0..1
}

// Next returns the n-th wait (n from 0).
func (b Backoff) Next(n int) time.Duration {
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max); i++ {
		d *= b.Factor
	}
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}

func (t *Target) setDefaults() {
	if t.Timeout <= 0 {
		t.Timeout = 2 * time.Hour
	}
	if t.Overlap < 0 {
		t.Overlap = 0
	}
	if t.Poll.Initial <= 0 {
		t.Poll = Backoff{Initial: 5 * time.Second, Factor: 1.5, Max: time.Minute, Jitter: 0.1}
	}
	if t.Retry.Initial <= 0 {
		t.Retry = Backoff{Initial: 30 * time.Second, Factor: 2, Max: 5 * time.Minute, Jitter: 0.1}
	}
	if t.DeleteRetry.Initial <= 0 {
		t.DeleteRetry = Backoff{Initial: time.Second, Factor: 2, Max: 4 * time.Second, Jitter: 0.1}
	}
	for _, b := range []*Backoff{&t.Poll, &t.Retry, &t.DeleteRetry} {
		if b.Factor < 1 {
			b.Factor = 1
		}
		if b.Max < b.Initial {
			b.Max = b.Initial
		}
	}
	if t.MaxJobLosses <= 0 {
		t.MaxJobLosses = 3
	}
	if t.PollPolicy == "" {
		t.PollPolicy = PollHistory
	}
	if t.PollFloor <= 0 {
		t.PollFloor = time.Second
	}
	t.allowed, t.allowedParsed = t.parseAllowed(), true
}

func (t *Target) validate() error {
	if !messages.ValidTarget(t.Name) {
		return fmt.Errorf("target %q: name must match [A-Za-z0-9_-]{1,64}", t.Name)
	}
	if t.Pathling == nil {
		return fmt.Errorf("target %q: no Pathling client", t.Name)
	}
	if t.PollPolicy != PollHistory && t.PollPolicy != PollSeed {
		return fmt.Errorf("target %q: poll policy %q is not %s or %s", t.Name, t.PollPolicy, PollHistory, PollSeed)
	}
	return nil
}

// exportURLAllowed reports whether u is one of the target's allowed source
// URLs: same scheme, host and port, and a path equal to an allowed prefix or
// extending it at a "/" boundary.
func (t *Target) exportURLAllowed(u string) bool {
	pu, err := url.Parse(u)
	if err != nil || pu.User != nil {
		return false
	}
	allowed := t.allowed
	if !t.allowedParsed {
		allowed = t.parseAllowed()
	}
	for _, pa := range allowed {
		if !strings.EqualFold(pa.Scheme, pu.Scheme) || !strings.EqualFold(pa.Hostname(), pu.Hostname()) ||
			effectivePort(pa) != effectivePort(pu) {
			continue
		}
		prefix := strings.TrimSuffix(pa.EscapedPath(), "/")
		p := pu.EscapedPath()
		if p == prefix || strings.HasPrefix(p, prefix+"/") || prefix == "" {
			return true
		}
	}
	return false
}

// parseAllowed parses the allowed source URLs (the default export URL
// when none are set), skipping those that do not parse.
func (t *Target) parseAllowed() []*url.URL {
	allowed := t.AllowedExportURLs
	if len(allowed) == 0 && t.Defaults.ExportURL != "" {
		allowed = []string{t.Defaults.ExportURL}
	}
	parsed := make([]*url.URL, 0, len(allowed))
	for _, a := range allowed {
		if pa, err := url.Parse(a); err == nil {
			parsed = append(parsed, pa)
		}
	}
	return parsed
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}
