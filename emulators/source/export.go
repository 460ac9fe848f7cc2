package source

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

const (
	statusPath = "/fhir/$export-poll-status"
	filesPath  = "/fhir/_bulk-files/"
)

// export is one kick-off: its snapshot and its progress.
type export struct {
	id          string
	seq         int64
	owner       string // client id with auth on
	method      string
	request     string // the kick-off URL as reported in the manifest
	statusURL   string
	req         exportRequest
	types       []string // the types the snapshot covered
	kickedOffAt time.Time
	txTime      time.Time
	polls       int
	failure     *Fault // an injected "export" fault: the job fails once "done"
	deleted     bool   // DELETEd by the client: 404 from now on

	outputs, tombstones, errors []*exportFile
	// Sizes kept for ExportInfo after a DELETE dropped the files.
	outputFiles, outputResources, deletedResources int
}

// exportFile is one NDJSON file of a manifest.
type exportFile struct {
	kind    string // "output", "deleted" or "error"
	typ     string // resource type of the lines
	name    string
	records []*record // output: the snapshot's records; deleted: tombstones
	static  [][]byte  // error: prepared lines
	keep    []string  // output: _elements to keep, nil for whole resources
}

func (f *exportFile) count() int {
	if f.kind == "error" {
		return len(f.static)
	}
	return len(f.records)
}

// handleKickOff serves GET and POST [base]/$export.
func (s *Server) handleKickOff(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r)
	if !ok {
		s.countRejected()
		return
	}
	if s.serveFault(w, StageKickOff) {
		s.countRejected()
		return
	}
	if !acceptOK(r.Header.Values("Accept")) {
		s.rejectKickOff(w, http.StatusBadRequest, fmt.Sprintf("unsupported Accept %q: use application/fhir+json", strings.Join(r.Header.Values("Accept"), ", ")))
		return
	}
	if !preferAsync(r.Header.Values("Prefer")) {
		s.rejectKickOff(w, http.StatusBadRequest, "the Prefer header must include respond-async")
		return
	}
	req, err := parseKickOff(r)
	if err != nil {
		var ke *kickOffError
		if errors.As(err, &ke) {
			s.rejectKickOff(w, ke.status, ke.msg)
		} else {
			s.rejectKickOff(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	if who != nil && req.types != nil {
		for _, t := range req.types {
			if !who.permits(t) {
				s.rejectKickOff(w, http.StatusForbidden, fmt.Sprintf("the access token's scopes do not permit reading %s", t))
				return
			}
		}
	}

	requestURL := s.fhirBase(r) + "/$export"
	if r.Method == http.MethodGet && r.URL.RawQuery != "" {
		requestURL += "?" + r.URL.RawQuery
	}
	exp := s.startExport(req, who, r.Method, requestURL, s.fhirBase(r))
	w.Header().Set("Content-Location", exp.statusURL)
	writeOutcome(w, http.StatusAccepted, "information", "informational",
		"Export accepted; poll the URL in the Content-Location header for its status")
}

func (s *Server) rejectKickOff(w http.ResponseWriter, status int, msg string) {
	s.countRejected()
	code := "invalid"
	switch status {
	case http.StatusForbidden:
		code = "forbidden"
	case http.StatusUnsupportedMediaType:
		code = "not-supported"
	}
	writeOutcome(w, status, "error", code, msg)
}

func (s *Server) countRejected() {
	s.mu.Lock()
	s.counters.KickOffsRejected++
	s.mu.Unlock()
}

// startExport takes the snapshot and registers the export.
func (s *Server) startExport(req exportRequest, who *principal, method, requestURL, base string) *export {
	exp := &export{
		id:      uuid.NewString(),
		method:  method,
		request: requestURL,
		req:     req,
	}
	exp.statusURL = base + "/$export-poll-status?_jobId=" + exp.id
	if who != nil {
		exp.owner = who.clientID
	}

	type selection struct {
		typ                string
		current, deletions []*record
	}
	s.mu.Lock()
	now := s.now()
	s.evictExpiredLocked(now)
	exp.kickedOffAt = now
	exp.txTime = s.snapshotTimeLocked()
	upper := exp.txTime
	if req.until != nil && req.until.Before(upper) {
		upper = *req.until
	}
	types := req.types
	if types == nil {
		for _, t := range s.typesWithHistoryLocked() {
			if who == nil || who.permits(t) {
				types = append(types, t)
			}
		}
	}
	exp.types = types
	selections := make([]selection, 0, len(types))
	for _, typ := range types {
		sel := selection{typ: typ}
		for _, rec := range s.resources[typ] {
			if rec.lastUpdated.After(upper) || (req.since != nil && !rec.lastUpdated.After(*req.since)) {
				continue
			}
			if !rec.isDeleted() {
				sel.current = append(sel.current, rec)
			} else if req.since != nil {
				sel.deletions = append(sel.deletions, rec)
			}
		}
		selections = append(selections, sel)
	}
	exp.failure = s.takeFaultLocked(StageExport)
	s.exportSeq++
	exp.seq = s.exportSeq
	s.counters.ExportsStarted++
	s.mu.Unlock()

	// The records are immutable: sorting and splitting can happen outside the lock.
	per := s.cfg.ResourcesPerFile
	for _, sel := range selections {
		sortRecords(sel.current)
		sortRecords(sel.deletions)
		keep := elementsFor(req.elements, sel.typ)
		for i, chunk := range chunks(sel.current, per) {
			exp.outputs = append(exp.outputs, &exportFile{
				kind: "output", typ: sel.typ, name: fmt.Sprintf("%s-%d.ndjson", sel.typ, i+1), records: chunk, keep: keep,
			})
		}
		for i, chunk := range chunks(sel.deletions, per) {
			exp.tombstones = append(exp.tombstones, &exportFile{
				kind: "deleted", typ: "Bundle", name: fmt.Sprintf("deleted-%s-%d.ndjson", sel.typ, i+1), records: chunk,
			})
		}
	}
	if len(req.typeFilters) > 0 {
		// Tell the client, the way the IG allows for lenient handling, that _typeFilter was
		// not applied: the output is a superset of what it asked for.
		line, _ := json.Marshal(newOutcome("warning", "not-supported",
			"_typeFilter is not supported by this server and was ignored: "+strings.Join(req.typeFilters, ", ")))
		exp.errors = append(exp.errors, &exportFile{kind: "error", typ: "OperationOutcome", name: "errors-1.ndjson", static: [][]byte{line}})
	}

	exp.outputFiles = len(exp.outputs)
	for _, f := range exp.outputs {
		exp.outputResources += f.count()
	}
	for _, f := range exp.tombstones {
		exp.deletedResources += f.count()
	}

	s.mu.Lock()
	s.exports[exp.id] = exp
	s.mu.Unlock()
	s.log.Info("export started", "export", exp.id, "method", method, "types", strings.Join(types, ","),
		"since", formatOptional(req.since), "until", formatOptional(req.until),
		"transactionTime", exp.txTime.Format(instantLayout), "client", exp.owner)
	return exp
}

func formatOptional(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// sortRecords orders records by lastUpdated, then id: the order of changes.
func sortRecords(recs []*record) {
	sort.Slice(recs, func(i, j int) bool {
		if !recs[i].lastUpdated.Equal(recs[j].lastUpdated) {
			return recs[i].lastUpdated.Before(recs[j].lastUpdated)
		}
		return recs[i].id < recs[j].id
	})
}

func chunks(recs []*record, size int) [][]*record {
	var out [][]*record
	for len(recs) > 0 {
		n := min(size, len(recs))
		out = append(out, recs[:n:n])
		recs = recs[n:]
	}
	return out
}

// evictExpiredLocked forgets exports older than ExportTTL. The caller holds s.mu.
func (s *Server) evictExpiredLocked(now time.Time) {
	if s.cfg.ExportTTL < 0 {
		return
	}
	for id, exp := range s.exports {
		if now.Sub(exp.kickedOffAt) > s.cfg.ExportTTL {
			delete(s.exports, id)
		}
	}
}

// lookupExport finds a live export for a status, file or delete request and checks its
// owner. It writes the error response and returns nil when there is none to serve.
func (s *Server) lookupExport(w http.ResponseWriter, id string, who *principal) *export {
	s.mu.Lock()
	exp := s.exports[id]
	gone := exp == nil || exp.deleted
	s.mu.Unlock()
	if gone {
		writeOutcome(w, http.StatusNotFound, "error", "not-found", fmt.Sprintf("unknown export %q", id))
		return nil
	}
	if who != nil && exp.owner != who.clientID {
		writeOutcome(w, http.StatusForbidden, "error", "forbidden", "the export belongs to another client")
		return nil
	}
	return exp
}

// progressLocked reports whether an export is finished and, if not, a percentage below 100.
// The caller holds s.mu.
func (s *Server) progressLocked(exp *export, now time.Time) (bool, int) {
	fraction := 1.0
	if n := s.cfg.ExportPolls; n > 0 {
		fraction = min(fraction, float64(exp.polls)/float64(n+1))
	}
	if d := s.cfg.ExportDelay; d > 0 {
		fraction = min(fraction, float64(now.Sub(exp.kickedOffAt))/float64(d))
	}
	done := exp.polls > s.cfg.ExportPolls && !now.Before(exp.kickedOffAt.Add(s.cfg.ExportDelay))
	pct := int(fraction * 100)
	return done, max(0, min(pct, 99))
}

// manifestFile is one entry of a manifest's output, deleted or error array.
type manifestFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
}

// manifest is the complete-status body.
type manifest struct {
	TransactionTime     string         `json:"transactionTime"`
	Request             string         `json:"request"`
	RequiresAccessToken bool           `json:"requiresAccessToken"`
	Output              []manifestFile `json:"output"`
	Deleted             []manifestFile `json:"deleted"`
	Error               []manifestFile `json:"error"`
}

// handleStatus serves GET on a status URL.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	exp := s.lookupExport(w, r.URL.Query().Get("_jobId"), who)
	if exp == nil {
		return
	}
	if s.serveFault(w, StageStatus) {
		s.mu.Lock()
		s.counters.StatusPolls++
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.counters.StatusPolls++
	exp.polls++
	done, pct := s.progressLocked(exp, s.now())
	failure := exp.failure
	outputs, tombstones, errorFiles := exp.outputs, exp.tombstones, exp.errors
	s.mu.Unlock()

	if !done {
		w.Header().Set("X-Progress", fmt.Sprintf("%d%%", pct))
		if s.cfg.RetryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(s.cfg.RetryAfter))
		}
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if failure != nil {
		failure.write(w)
		return
	}
	base := s.fhirBase(r)
	m := manifest{
		TransactionTime:     exp.txTime.Format(instantLayout),
		Request:             exp.request,
		RequiresAccessToken: s.auth != nil,
		Output:              []manifestFile{},
		Deleted:             []manifestFile{},
		Error:               []manifestFile{},
	}
	list := func(files []*exportFile) []manifestFile {
		out := []manifestFile{}
		for _, f := range files {
			out = append(out, manifestFile{Type: f.typ, URL: base + "/_bulk-files/" + exp.id + "/" + f.name, Count: f.count()})
		}
		return out
	}
	m.Output, m.Deleted, m.Error = list(outputs), list(tombstones), list(errorFiles)
	writeJSON(w, http.StatusOK, "application/json", m)
}

// handleDeleteExport serves DELETE on a status URL: the export and its files are gone.
func (s *Server) handleDeleteExport(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	exp := s.lookupExport(w, r.URL.Query().Get("_jobId"), who)
	if exp == nil {
		return
	}
	s.mu.Lock()
	exp.deleted = true
	exp.outputs, exp.tombstones, exp.errors = nil, nil, nil
	s.counters.ExportsDeleted++
	s.mu.Unlock()
	s.log.Info("export deleted", "export", exp.id)
	writeOutcome(w, http.StatusAccepted, "information", "informational", "Export deleted")
}

// handleFile serves one NDJSON file of a completed export.
func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	exp := s.lookupExport(w, r.PathValue("export"), who)
	if exp == nil {
		return
	}
	name := r.PathValue("file")
	s.mu.Lock()
	done, _ := s.progressLocked(exp, s.now())
	var file *exportFile
	if done && exp.failure == nil {
		for _, group := range [][]*exportFile{exp.outputs, exp.tombstones, exp.errors} {
			for _, f := range group {
				if f.name == name {
					file = f
				}
			}
		}
	}
	s.mu.Unlock()
	if file == nil {
		writeOutcome(w, http.StatusNotFound, "error", "not-found", fmt.Sprintf("export %s has no file %q", exp.id, name))
		return
	}
	if s.serveFault(w, StageDownload) {
		return
	}
	s.mu.Lock()
	s.counters.Downloads++
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/fhir+ndjson")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := file.write(bw); err != nil {
		s.log.Warn("writing export file", "export", exp.id, "file", name, "err", err)
		return
	}
	if err := bw.Flush(); err != nil {
		s.log.Debug("client went away during download", "export", exp.id, "file", name, "err", err)
	}
}

// write streams the file's NDJSON lines.
func (f *exportFile) write(w *bufio.Writer) error {
	switch f.kind {
	case "error":
		for _, line := range f.static {
			_, _ = w.Write(line)
			_ = w.WriteByte('\n')
		}
	case "deleted":
		for _, rec := range f.records {
			fmt.Fprintf(w, `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"%s/%s"}}]}`+"\n", rec.typ, rec.id)
		}
	default:
		for _, rec := range f.records {
			body := rec.body
			if f.keep != nil {
				trimmed, err := applyElements(body, rec.typ, f.keep)
				if err != nil {
					return fmt.Errorf("applying _elements to %s/%s: %w", rec.typ, rec.id, err)
				}
				body = trimmed
			}
			_, _ = w.Write(body)
			_ = w.WriteByte('\n')
		}
	}
	return nil
}

// ExportInfo describes an export for tests and the control API.
type ExportInfo struct {
	ID                    string   `json:"id"`
	Method                string   `json:"method"`
	Request               string   `json:"request"`
	StatusURL             string   `json:"statusUrl"`
	Client                string   `json:"client,omitempty"`
	Types                 []string `json:"types"` // the types the snapshot covered
	Since                 string   `json:"since,omitempty"`
	Until                 string   `json:"until,omitempty"`
	OutputFormat          string   `json:"outputFormat"`
	Elements              []string `json:"elements,omitempty"`
	TypeFilters           []string `json:"typeFilters,omitempty"`
	IncludeAssociatedData []string `json:"includeAssociatedData,omitempty"`
	KickedOffAt           string   `json:"kickedOffAt"`
	TransactionTime       string   `json:"transactionTime"`
	Polls                 int      `json:"polls"`
	State                 string   `json:"state"` // in-progress, completed, failed or deleted
	OutputFiles           int      `json:"outputFiles"`
	OutputResources       int      `json:"outputResources"`
	DeletedResources      int      `json:"deletedResources"`
}

// Exports lists the exports kicked off since New or the last Reset (deleted ones included,
// expired ones not), oldest first.
func (s *Server) Exports() []ExportInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	list := make([]*export, 0, len(s.exports))
	for _, exp := range s.exports {
		list = append(list, exp)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
	out := make([]ExportInfo, 0, len(list))
	for _, exp := range list {
		info := ExportInfo{
			ID: exp.id, Method: exp.method, Request: exp.request, StatusURL: exp.statusURL, Client: exp.owner,
			Types: append([]string{}, exp.types...), OutputFormat: exp.req.outputFormat,
			Elements: exp.req.elements, TypeFilters: exp.req.typeFilters, IncludeAssociatedData: exp.req.includeAssociatedData,
			Since: formatOptional(exp.req.since), Until: formatOptional(exp.req.until),
			KickedOffAt: exp.kickedOffAt.Format(instantLayout), TransactionTime: exp.txTime.Format(instantLayout),
			Polls: exp.polls, OutputFiles: exp.outputFiles,
			OutputResources: exp.outputResources, DeletedResources: exp.deletedResources,
		}
		done, _ := s.progressLocked(exp, now)
		switch {
		case exp.deleted:
			info.State = "deleted"
		case !done:
			info.State = "in-progress"
		case exp.failure != nil:
			info.State = "failed"
		default:
			info.State = "completed"
		}
		out = append(out, info)
	}
	return out
}
