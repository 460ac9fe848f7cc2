package bench

import (
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Durations gives the duration of each job a target's kick-off starts.
// Implementations must be safe for concurrent use.
type Durations interface {
	Next(target string) time.Duration
}

// Fixed is every job of the same duration.
type Fixed time.Duration

// Next returns d.
func (d Fixed) Next(string) time.Duration { return time.Duration(d) }

// LogNormal is a job duration drawn from a lognormal distribution with the
// given median and sigma (of the underlying normal), plus a fraction of
// outliers that take OutlierFactor times as long: the shape of real imports,
// where most targets are quick and a few are slow.
type LogNormal struct {
	Median        time.Duration
	Sigma         float64
	OutlierFrac   float64
	OutlierFactor float64
}

// Next draws one duration.
func (l LogNormal) Next(string) time.Duration {
	d := float64(l.Median) * math.Exp(l.Sigma*rand.NormFloat64())
	if l.OutlierFrac > 0 && rand.Float64() < l.OutlierFrac {
		d *= max(l.OutlierFactor, 1)
	}
	return time.Duration(d)
}

// ShapedDurations gives job durations per target and request shape:
// "full", or "incr" for a kick-off with _since. A stand-in whose Durations
// also implements it asks it instead of Next.
type ShapedDurations interface {
	NextShaped(target, shape string) time.Duration
}

// PerShape is a distribution per target and shape (PerShape[target][shape]);
// Next draws a full job's.
type PerShape map[string]map[string]Durations

// NextShaped draws from the target's distribution for shape (0 when none).
func (p PerShape) NextShaped(target, shape string) time.Duration {
	if d, ok := p[target][shape]; ok {
		return d.Next(target)
	}
	return 0
}

// Next draws a full job's duration.
func (p PerShape) Next(target string) time.Duration { return p.NextShaped(target, "full") }

// PerTarget picks a distribution per target, Default for the others.
type PerTarget struct {
	Default Durations
	Targets map[string]Durations
}

// Next uses the target's distribution.
func (p PerTarget) Next(target string) time.Duration {
	if d, ok := p.Targets[target]; ok {
		return d.Next(target)
	}
	return p.Default.Next(target)
}

// StandInEvent is what the stand-in tells its observer: a kick-off, a poll
// or a DELETE of a job, with the time the stand-in answered it.
type StandInEvent struct {
	Kind   string // "kickoff", "poll", "delete"
	Target string
	Job    uint64
	At     time.Time
	Due    time.Time // for kickoff: when the job will be done
}

// StandInCounters are the stand-in's totals since it started.
type StandInCounters struct {
	KickOffs, Polls, Deletes, Rejected int64
}

// StandIn is a fast multi-tenant Pathling stand-in: one FHIR base per
// target at /t/<target>/fhir, answering $import-pnp (202 + Content-Location)
// and $job (202 while running, 200 with a Parameters result when done,
// DELETE 202) with Pathling's wire format, and nothing more: no export is
// fetched, no data imported. Each kick-off starts a new job whose duration
// Durations draws.
type StandIn struct {
	durations Durations
	// progressFrom is the fraction of a job's duration after which polls
	// carry X-Progress (Pathling sends it only in the import phase); 0: never.
	progressFrom float64
	observe      func(StandInEvent)

	ln   net.Listener
	srv  *http.Server
	base string

	nextID                             atomic.Uint64
	kickOffs, polls, deletes, rejected atomic.Int64

	mu   sync.Mutex
	jobs map[uint64]standInJob
}

type standInJob struct {
	target     string
	started    time.Time
	due        time.Time
	kickOffURL string
}

// StandInOption configures NewStandIn.
type StandInOption func(*StandIn)

// WithProgress makes polls after fraction f (0..1) of a job's duration carry
// X-Progress, as Pathling's import phase does.
func WithProgress(f float64) StandInOption { return func(s *StandIn) { s.progressFrom = f } }

// WithObserver calls fn for every kick-off, poll and DELETE answered (from
// the server's goroutines: fn must be quick and safe for concurrent use).
func WithObserver(fn func(StandInEvent)) StandInOption { return func(s *StandIn) { s.observe = fn } }

// NewStandIn starts the stand-in on a free 127.0.0.1 port.
func NewStandIn(d Durations, opts ...StandInOption) (*StandIn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &StandIn{durations: d, ln: ln, base: "http://" + ln.Addr().String(), jobs: map[uint64]standInJob{}}
	for _, o := range opts {
		o(s)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// SetDurations replaces the job durations of later kick-offs.
func (s *StandIn) SetDurations(d Durations) {
	s.mu.Lock()
	s.durations = d
	s.mu.Unlock()
}

// BaseURL is a target's FHIR base.
func (s *StandIn) BaseURL(target string) string { return s.base + "/t/" + target + "/fhir" }

// SourceURL is an export URL the stand-in accepts (it never fetches it).
func (s *StandIn) SourceURL() string { return s.base + "/source/fhir" }

// Counters returns the totals so far.
func (s *StandIn) Counters() StandInCounters {
	return StandInCounters{KickOffs: s.kickOffs.Load(), Polls: s.polls.Load(), Deletes: s.deletes.Load(), Rejected: s.rejected.Load()}
}

// Running is the number of jobs known (started and not DELETEd).
func (s *StandIn) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

// Close stops the server.
func (s *StandIn) Close() error { return s.srv.Close() }

const (
	fhirJSON        = "application/fhir+json"
	acceptedBody    = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job accepted for processing, see the Content-Location header for the URL at which status can be queried"}]}`
	processingBody  = `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"Job currently processing"}]}`
	notFoundBody    = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"Job ID not found"}]}`
	badRequestBody  = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"%s"}]}`
	transactionTime = "2006-01-02T15:04:05.000"
)

func (s *StandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /t/<target>/fhir/<op>
	rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	target, op, ok := strings.Cut(rest, "/fhir/")
	if !ok || target == "" {
		http.NotFound(w, r)
		return
	}
	switch {
	case op == "$import-pnp" && r.Method == http.MethodPost:
		s.kickOff(w, r, target)
	case op == "$job" && r.Method == http.MethodGet:
		s.poll(w, r, target)
	case op == "$job" && r.Method == http.MethodDelete:
		s.delete(w, r, target)
	default:
		writeFHIR(w, http.StatusNotFound, notFoundBody)
	}
}

func writeFHIR(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", fhirJSON)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (s *StandIn) reject(w http.ResponseWriter, why string) {
	s.rejected.Add(1)
	writeFHIR(w, http.StatusBadRequest, strings.Replace(badRequestBody, "%s", why, 1))
}

func (s *StandIn) kickOff(w http.ResponseWriter, r *http.Request, target string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	switch {
	case err != nil:
		s.reject(w, "unreadable body")
		return
	case !strings.HasPrefix(r.Header.Get("Content-Type"), fhirJSON):
		s.reject(w, "Content-Type must be application/fhir+json")
		return
	case r.Header.Get("Prefer") != "respond-async":
		s.reject(w, "Prefer: respond-async required")
		return
	case !strings.Contains(string(body), `"exportUrl"`):
		s.reject(w, "exportUrl is required")
		return
	}
	now := time.Now()
	shape := "full"
	if strings.Contains(string(body), `"_since"`) {
		shape = "incr"
	}
	s.mu.Lock()
	var d time.Duration
	if sd, ok := s.durations.(ShapedDurations); ok {
		d = sd.NextShaped(target, shape)
	} else {
		d = s.durations.Next(target)
	}
	id := s.nextID.Add(1)
	kickOffURL := "http://" + r.Host + r.URL.Path
	s.jobs[id] = standInJob{target: target, started: now, due: now.Add(d), kickOffURL: kickOffURL}
	s.mu.Unlock()
	s.kickOffs.Add(1)
	w.Header().Set("Content-Location", s.BaseURL(target)+"/$job?id="+strconv.FormatUint(id, 10))
	writeFHIR(w, http.StatusAccepted, acceptedBody)
	if s.observe != nil {
		s.observe(StandInEvent{Kind: "kickoff", Target: target, Job: id, At: now, Due: now.Add(d)})
	}
}

func (s *StandIn) job(r *http.Request) (uint64, standInJob, bool) {
	id, err := strconv.ParseUint(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		return 0, standInJob{}, false
	}
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	return id, j, ok
}

func (s *StandIn) poll(w http.ResponseWriter, r *http.Request, target string) {
	s.polls.Add(1)
	id, j, ok := s.job(r)
	if !ok || j.target != target {
		writeFHIR(w, http.StatusNotFound, notFoundBody)
		return
	}
	now := time.Now()
	if s.observe != nil {
		s.observe(StandInEvent{Kind: "poll", Target: target, Job: id, At: now})
	}
	if now.Before(j.due) {
		total := j.due.Sub(j.started)
		if s.progressFrom > 0 && total > 0 {
			if f := float64(now.Sub(j.started)) / float64(total); f >= s.progressFrom {
				w.Header().Set("X-Progress", strconv.Itoa(int(100*(f-s.progressFrom)/(1-s.progressFrom+1e-9)))+"%")
			}
		}
		w.Header().Set("Cache-Control", "no-cache")
		writeFHIR(w, http.StatusAccepted, processingBody)
		return
	}
	// Pathling's ImportResponse: transactionTime as valueString, the
	// kick-off URL as request, one output per staged file.
	tt := j.due.UTC().Format(transactionTime) + "+00:00"
	w.Header().Set("Cache-Control", "max-age=1")
	writeFHIR(w, http.StatusOK, `{"resourceType":"Parameters","parameter":[{"name":"transactionTime","valueString":"`+tt+
		`"},{"name":"request","valueString":"`+j.kickOffURL+`"},{"name":"output","part":[{"name":"inputUrl","valueUrl":"`+
		s.base+`/staging/`+strconv.FormatUint(id, 10)+`/Patient.ndjson"}]}]}`)
}

func (s *StandIn) delete(w http.ResponseWriter, r *http.Request, target string) {
	s.deletes.Add(1)
	id, j, ok := s.job(r)
	if !ok || j.target != target {
		writeFHIR(w, http.StatusNotFound, notFoundBody)
		return
	}
	s.mu.Lock()
	delete(s.jobs, id)
	s.mu.Unlock()
	writeFHIR(w, http.StatusAccepted, processingBody)
	if s.observe != nil {
		s.observe(StandInEvent{Kind: "delete", Target: target, Job: id, At: time.Now()})
	}
}
