// Package source is an in-memory FHIR R4 server that offers system-level Bulk Data export
// (FHIR Bulk Data Access IG v2, plus _until), for tests and the dev mode: it stands in for the
// source that Pathling's $import-pnp pulls from.
//
// It holds a deterministic synthetic dataset (Patient, Encounter, Observation, Condition)
// that tests change through Go helpers (Put, Delete) or the JSON control API under /_source/.
// Every export is a consistent snapshot taken at kick-off; meta.lastUpdated stamps are strictly
// increasing and never later than a later export's transactionTime, so incremental exports
// (_since = a previous transactionTime) are exact: no change is lost or repeated.
//
// Optional SMART Backend Services authentication (private_key_jwt, RS384/ES384) protects the
// export endpoints. See README.md for the wire details and the control API.
package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultRetryAfter       = time.Second
	DefaultResourcesPerFile = 1000
	DefaultExportTTL        = 24 * time.Hour
)

// ErrInvalidConfig is wrapped by New when the configuration is unusable.
var ErrInvalidConfig = errors.New("source: invalid config")

// Config configures a Server. The zero value is usable: 10 patients from seed 0, exports
// complete on their first status poll, no authentication.
type Config struct {
	// Seed and the sizes below determine the synthetic dataset (ids and contents): the same
	// values give the same resources. For each size, 0 means the default and a negative value
	// means none.
	Seed                   int64
	Patients               int // default 10
	EncountersPerPatient   int // default 2
	ObservationsPerPatient int // default 3
	ConditionsPerPatient   int // default 1
	// SeedAge is how far before the clock at New the dataset's meta.lastUpdated values start;
	// they are spread in millisecond steps over that window, in generation order, and all lie
	// before the clock at New. Default 24h.
	SeedAge time.Duration

	// Clock gives meta.lastUpdated of writes, transactionTime of exports, token expiry and the
	// ExportDelay. Default time.Now. Values are truncated to milliseconds.
	Clock func() time.Time

	// An export stays in progress (202 on status polls) for its first ExportPolls polls and
	// until ExportDelay has passed on Clock since kick-off; both default to 0 (done at once).
	ExportPolls int
	ExportDelay time.Duration
	// RetryAfter is sent as Retry-After (whole seconds, rounded up) on 202 status responses.
	// Default 1s; negative: no Retry-After header.
	RetryAfter time.Duration

	// ResourcesPerFile splits a type's output over several NDJSON files. Default 1000.
	ResourcesPerFile int
	// ExportTTL: exports older than this (on Clock) are forgotten at the next kick-off, as if
	// the client had deleted them. Default 24h; negative keeps them until DELETE or Reset.
	ExportTTL time.Duration

	// BaseURL is the origin used in absolute URLs (Content-Location, manifest file URLs,
	// token endpoint), e.g. "http://127.0.0.1:8081". Default: taken from each request's Host.
	BaseURL string

	// Auth turns on SMART Backend Services authentication; nil leaves the server open.
	Auth *AuthConfig

	// Logger receives one line per export event; default discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.SeedAge == 0 {
		c.SeedAge = DefaultSeedAge
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.ResourcesPerFile == 0 {
		c.ResourcesPerFile = DefaultResourcesPerFile
	}
	if c.ExportTTL == 0 {
		c.ExportTTL = DefaultExportTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
}

func (c *Config) validate() error {
	switch {
	case c.SeedAge < 0:
		return fmt.Errorf("%w: SeedAge must not be negative", ErrInvalidConfig)
	case c.ExportPolls < 0:
		return fmt.Errorf("%w: ExportPolls must not be negative", ErrInvalidConfig)
	case c.ExportDelay < 0:
		return fmt.Errorf("%w: ExportDelay must not be negative", ErrInvalidConfig)
	case c.ResourcesPerFile < 0:
		return fmt.Errorf("%w: ResourcesPerFile must not be negative", ErrInvalidConfig)
	case c.BaseURL != "" && !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://"):
		return fmt.Errorf("%w: BaseURL must start with http:// or https://", ErrInvalidConfig)
	}
	return nil
}

// Counters count what clients did; see Server.Counters.
type Counters struct {
	ExportsStarted   int64 `json:"exportsStarted"`   // accepted kick-offs (202)
	KickOffsRejected int64 `json:"kickOffsRejected"` // kick-offs answered with an error
	StatusPolls      int64 `json:"statusPolls"`      // status requests for known exports
	Downloads        int64 `json:"downloads"`        // file downloads served (200)
	ExportsDeleted   int64 `json:"exportsDeleted"`   // DELETE of a status URL (202)
	ResourceWrites   int64 `json:"resourceWrites"`   // Put / PUT /_source/resources
	ResourceDeletes  int64 `json:"resourceDeletes"`  // Delete / DELETE /_source/resources
	TokensIssued     int64 `json:"tokensIssued"`
	TokensRejected   int64 `json:"tokensRejected"` // failed token requests
	Unauthorized     int64 `json:"unauthorized"`   // 401 answers on FHIR endpoints
	FaultsServed     int64 `json:"faultsServed"`   // injected faults that were applied
}

// Server is the emulated source. It is an http.Handler: the FHIR base is /fhir, the token
// endpoint /auth/token, the control API /_source/. Safe for concurrent use.
type Server struct {
	cfg     Config
	clock   func() time.Time
	log     *slog.Logger
	mux     *http.ServeMux
	initial []*record // the generated dataset; records are immutable, so Reset reuses them

	mu        sync.Mutex
	resources map[string]map[string]*record
	// lastWrite and lastSnapshot are the latest meta.lastUpdated and transactionTime handed
	// out; they never move backwards, not even on Reset.
	lastWrite, lastSnapshot time.Time
	exports                 map[string]*export
	exportSeq               int64
	counters                Counters
	faults                  []Fault
	auth                    *authState // nil: open server
	closed                  bool
}

// New builds a Server with its initial dataset. It returns an error wrapping
// ErrInvalidConfig for a bad Config (including unusable client keys).
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, exports: map[string]*export{}}
	if cfg.Auth != nil {
		auth, err := newAuthState(*cfg.Auth)
		if err != nil {
			return nil, err
		}
		s.auth = auth
	}
	start := s.now()
	size := datasetSize{
		patients:     resolveCount(cfg.Patients, DefaultPatients),
		encounters:   resolveCount(cfg.EncountersPerPatient, DefaultEncountersPerPatient),
		observations: resolveCount(cfg.ObservationsPerPatient, DefaultObservationsPerPatient),
		conditions:   resolveCount(cfg.ConditionsPerPatient, DefaultConditionsPerPatient),
	}
	initial, err := generateDataset(cfg.Seed, size, start, cfg.SeedAge)
	if err != nil {
		return nil, err
	}
	s.initial = initial
	s.loadInitialLocked()
	s.mux = s.routes()
	return s, nil
}

// loadInitialLocked replaces the store's content with the generated dataset. The caller holds
// s.mu (or owns s exclusively).
func (s *Server) loadInitialLocked() {
	s.resources = map[string]map[string]*record{}
	for _, rec := range s.initial {
		byID := s.resources[rec.typ]
		if byID == nil {
			byID = map[string]*record{}
			s.resources[rec.typ] = byID
		}
		byID[rec.id] = rec
		if rec.lastUpdated.After(s.lastWrite) {
			s.lastWrite = rec.lastUpdated
		}
	}
}

// Reset restores the initial dataset exactly as New generated it (same ids, versions and
// meta.lastUpdated), forgets every export, injected fault and counter. Issued access tokens and
// used assertion ids are kept. Stamps of later writes still come after everything issued before.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadInitialLocked()
	s.exports = map[string]*export{}
	s.faults = nil
	s.counters = Counters{}
	s.log.Info("source reset")
}

// Counters returns a copy of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// Close forgets all exports; afterwards every request gets 503. The Server holds no
// goroutines or connections: closing the http.Server that serves it is the caller's job.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.exports = map[string]*export{}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeOutcome(w, http.StatusServiceUnavailable, "error", "transient", "server closed")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fhir/metadata", s.handleMetadata)
	mux.HandleFunc("GET /fhir/.well-known/smart-configuration", s.handleSmartConfiguration)
	mux.HandleFunc("POST "+tokenPath, s.handleToken)
	mux.HandleFunc("GET /fhir/$export", s.handleKickOff)
	mux.HandleFunc("POST /fhir/$export", s.handleKickOff)
	mux.HandleFunc("GET "+statusPath, s.handleStatus)
	mux.HandleFunc("DELETE "+statusPath, s.handleDeleteExport)
	mux.HandleFunc("GET "+filesPath+"{export}/{file}", s.handleFile)

	mux.HandleFunc("GET /_source/resources", s.handleControlTypes)
	mux.HandleFunc("GET /_source/resources/{type}", s.handleControlList)
	mux.HandleFunc("GET /_source/resources/{type}/{id}", s.handleControlGet)
	mux.HandleFunc("PUT /_source/resources/{type}/{id}", s.handleControlPut)
	mux.HandleFunc("DELETE /_source/resources/{type}/{id}", s.handleControlDelete)
	mux.HandleFunc("POST /_source/reset", s.handleControlReset)
	mux.HandleFunc("GET /_source/counters", s.handleControlCounters)
	mux.HandleFunc("GET /_source/exports", s.handleControlExports)
	mux.HandleFunc("POST /_source/faults", s.handleControlAddFault)
	mux.HandleFunc("DELETE /_source/faults", s.handleControlClearFaults)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeOutcome(w, http.StatusNotFound, "error", "not-found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// origin returns the scheme://host[:port] of absolute URLs for this request.
func (s *Server) origin(r *http.Request) string {
	if s.cfg.BaseURL != "" {
		return s.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// fhirBase returns the absolute FHIR base URL for this request.
func (s *Server) fhirBase(r *http.Request) string { return s.origin(r) + "/fhir" }

// retryAfterSeconds renders a duration as a Retry-After value (whole seconds, at least 1).
func retryAfterSeconds(d time.Duration) string {
	secs := int64(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return fmt.Sprint(secs)
}

// operationOutcome is the FHIR error and information body.
type operationOutcome struct {
	ResourceType string         `json:"resourceType"`
	Issue        []outcomeIssue `json:"issue"`
}

type outcomeIssue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
}

func newOutcome(severity, code, diagnostics string) operationOutcome {
	return operationOutcome{ResourceType: "OperationOutcome", Issue: []outcomeIssue{{severity, code, diagnostics}}}
}

// writeOutcome writes an OperationOutcome with one issue as application/fhir+json.
func writeOutcome(w http.ResponseWriter, status int, severity, code, diagnostics string) {
	writeJSON(w, status, "application/fhir+json", newOutcome(severity, code, diagnostics))
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// handleMetadata serves a small CapabilityStatement naming the export operation and, with
// auth on, the SMART token endpoint.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	rest := map[string]any{
		"mode": "server",
		"operation": []any{map[string]any{
			"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
		}},
	}
	if s.auth != nil {
		rest["security"] = map[string]any{
			"service": []any{map[string]any{"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR",
			}}}},
			"extension": []any{map[string]any{
				"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
				"extension": []any{map[string]any{
					"url": "token", "valueUri": s.origin(r) + tokenPath,
				}},
			}},
		}
	}
	types := map[string]bool{"Patient": true, "Encounter": true, "Observation": true, "Condition": true}
	for _, t := range s.Types() {
		types[t] = true
	}
	var resources []any
	for _, t := range sortedKeys(types) {
		resources = append(resources, map[string]any{"type": t, "interaction": []any{}})
	}
	rest["resource"] = resources
	writeJSON(w, http.StatusOK, "application/fhir+json", map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         s.now().Format(instantLayout),
		"kind":         "instance",
		"fhirVersion":  "4.0.1",
		"format":       []any{"json"},
		"instantiates": []any{"http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"},
		"rest":         []any{rest},
	})
}
