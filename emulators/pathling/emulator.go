package pathling

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"
)

// Emulator stands in for a Pathling server's $import-pnp side. It is an http.Handler serving
// /fhir/... (the FHIR API) and /_emulator/... (the control API, see README.md).
type Emulator struct {
	cfg          Config
	store        *store
	sourceTokens *sourceTokens // nil unless Config.SourceAuth is set

	// importMu serialises the table-write phase of imports, like Pathling's import lock.
	importMu sync.Mutex

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	instanceID string          // changes on Restart; part of the kick-off ETag
	jobs       map[string]*job // by id
	byKey      map[string]*job // by request key (same request, same job)
	counters   counters
	scripts    scripts
	injections []*Injection
}

// New returns an Emulator. Call Close when done to stop its background jobs.
func New(cfg Config) (*Emulator, error) {
	if cfg.Auth != nil {
		a := *cfg.Auth
		cfg.Auth = &a
	}
	if cfg.SourceAuth != nil {
		sa := *cfg.SourceAuth
		cfg.SourceAuth = &sa
	}
	cfg.AllowableExportURLs = append([]string(nil), cfg.AllowableExportURLs...)
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Emulator{
		cfg:        cfg,
		store:      newStore(),
		ctx:        ctx,
		cancel:     cancel,
		instanceID: newInstanceID(),
		jobs:       map[string]*job{},
		byKey:      map[string]*job{},
		counters:   newCounters(),
		scripts:    newScripts(),
	}
	if cfg.SourceAuth != nil {
		e.sourceTokens = newSourceTokens(*cfg.SourceAuth, cfg.HTTPClient)
		// A key or endpoint that cannot work would fail every job: refuse it now (auth's
		// errors name no key material).
		if _, err := e.sourceTokens.newSource("http://config-check.invalid/fhir"); err != nil {
			cancel()
			return nil, fmt.Errorf("%w: pathling.import.pnp: %v", ErrInvalidConfig, err)
		}
	}
	return e, nil
}

// Close cancels every running job and waits for their goroutines to stop.
func (e *Emulator) Close() {
	e.cancel()
	e.mu.Lock()
	for _, j := range e.jobs {
		j.cancel()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Restart simulates a Pathling restart: every job is forgotten (polls and deletes of their ids
// then get 404) and running ones are stopped. The resource store and the counters survive, as
// Pathling's tables survive on disk.
func (e *Emulator) Restart() {
	e.mu.Lock()
	old := e.jobs
	e.jobs = map[string]*job{}
	e.byKey = map[string]*job{}
	e.instanceID = newInstanceID()
	e.counters.Restarts++
	e.mu.Unlock()
	for _, j := range old {
		j.cancel()
	}
}

// Reset forgets everything: jobs, resources, counters, scripts and pending injections.
func (e *Emulator) Reset() {
	e.Restart()
	e.store.reset()
	e.mu.Lock()
	e.counters = newCounters()
	e.scripts = newScripts()
	e.injections = nil
	e.mu.Unlock()
}

// Resources returns the stored resources of one type by id (for duplicate ids left by the
// append save mode, the last one wins; see ResourceCount).
func (e *Emulator) Resources(resourceType string) map[string]json.RawMessage {
	rows, _ := e.store.rows(resourceType)
	out := make(map[string]json.RawMessage, len(rows))
	for _, r := range rows {
		out[r.id] = append(json.RawMessage(nil), r.raw...)
	}
	return out
}

// ResourceCount returns the number of stored rows of one type, duplicates included.
func (e *Emulator) ResourceCount(resourceType string) int {
	rows, _ := e.store.rows(resourceType)
	return len(rows)
}

// ResourceTypes returns the resource types that have a table, sorted.
func (e *Emulator) ResourceTypes() []string {
	return e.store.types()
}

// ServeHTTP routes /fhir/... and /_emulator/....
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Pathling's servlet container dates every response; from the emulator's
	// clock, so that a skewed clock (Config.ClockSkew) shows on the wire.
	w.Header().Set("Date", e.cfg.Clock().UTC().Format(http.TimeFormat))
	p := r.URL.Path
	switch {
	case p == "/fhir" || strings.HasPrefix(p, "/fhir/"):
		e.serveFHIR(w, r, strings.TrimPrefix(strings.TrimPrefix(p, "/fhir"), "/"))
	case p == "/_emulator" || strings.HasPrefix(p, "/_emulator/"):
		e.serveControl(w, r, strings.Trim(strings.TrimPrefix(p, "/_emulator"), "/"))
	default:
		http.NotFound(w, r)
	}
}

func (e *Emulator) serveFHIR(w http.ResponseWriter, r *http.Request, rest string) {
	switch {
	case rest == "$import-pnp":
		if r.Method != http.MethodPost {
			e.methodNotAllowed(w, r, "$import-pnp", http.MethodPost)
			return
		}
		e.handleKickOff(w, r)
	case rest == "$job":
		switch r.Method {
		case http.MethodGet:
			e.handleJobGet(w, r)
		case http.MethodDelete:
			e.handleJobDelete(w, r)
		default:
			e.methodNotAllowed(w, r, "$job", http.MethodGet)
		}
	case rest == "metadata":
		if r.Method != http.MethodGet {
			e.methodNotAllowed(w, r, "metadata", http.MethodGet)
			return
		}
		e.handleMetadata(w, r)
	case strings.HasPrefix(rest, "$"):
		if _, err := e.authenticate(r); err != nil {
			writeUnauthorized(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, "Invalid request: The FHIR endpoint on this server does not know how to handle "+
			r.Method+" operation["+rest+"] with parameters [[]]")
	default:
		e.handleRead(w, r, rest)
	}
}

func (e *Emulator) methodNotAllowed(w http.ResponseWriter, r *http.Request, op, allowed string) {
	if _, err := e.authenticate(r); err != nil && op != "metadata" {
		writeUnauthorized(w, err)
		return
	}
	w.Header().Set("Allow", allowed)
	writeError(w, http.StatusMethodNotAllowed, "HTTP Method "+r.Method+" is not allowed for this operation. Methods allowed: ["+allowed+"]")
}

// serverBase is HAPI's getFhirServerBase: scheme and host from the request (honouring
// X-Forwarded-Proto/Host like Pathling's ApacheProxyAddressStrategy) plus /fhir.
func serverBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = strings.TrimSpace(strings.Split(p, ",")[0])
	}
	host := r.Host
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		host = strings.TrimSpace(strings.Split(h, ",")[0])
	}
	return scheme + "://" + host + "/fhir"
}

// completeURL is HAPI's getCompleteUrl: the full request URL as the client sent it.
func completeURL(r *http.Request) string {
	u := strings.TrimSuffix(serverBase(r), "/fhir") + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

func newInstanceID() string {
	return strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
}

// Jobs describes the jobs the emulator currently knows, oldest first.
func (e *Emulator) Jobs() []JobInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]JobInfo, 0, len(e.jobs))
	for _, j := range e.jobs {
		out = append(out, j.info())
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Created.Equal(out[b].Created) {
			return out[a].ID < out[b].ID
		}
		return out[a].Created.Before(out[b].Created)
	})
	return out
}
