package pathling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

const (
	acceptedDiagnostics = "Job accepted for processing, see the Content-Location header for the URL at which status can be queried"
	maxBodyBytes        = 10 << 20
	// javaErrorPrefix is what older HAPI versions put before InvalidUserInputError messages.
	javaErrorPrefix = "au.csiro.pathling.errors.InvalidUserInputError: "
)

// Accept values Pathling accepts on $import-pnp, compared token by token after a comma split.
var acceptedAcceptValues = []string{"application/fhir+json", "*/*"}

// handleKickOff is POST /fhir/$import-pnp. Checks run in Pathling's order: 401, body decoding
// (HAPI binds the body before the provider method runs), 403, body parameters, exportUrl
// policy, Accept, Prefer.
func (e *Emulator) handleKickOff(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.counters.KickOffs++
	inj := e.takeInjection(TargetKickOff, "")
	if inj != nil {
		e.counters.InjectedKickOffs++
	}
	e.mu.Unlock()
	if inj != nil {
		inj.write(w)
		return
	}

	caller, err := e.authenticate(r)
	if err != nil {
		e.reject()
		writeUnauthorized(w, err)
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		e.reject()
		writeError(w, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	if msg := checkContentType(r.Header.Get("Content-Type")); msg != "" {
		e.reject()
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if _, err := parseParameters(body); err != nil {
		e.reject()
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	if !caller.has("pathling:import-pnp") {
		e.reject()
		writeError(w, http.StatusForbidden, missingAuthority("pathling:import-pnp"))
		return
	}

	req, err := parseImportRequest(body)
	if err == nil {
		err = e.checkExportURL(r.Context(), req.ExportURL)
	}
	if err == nil {
		err = checkAccept(r.Header.Get("Accept"))
	}
	if err == nil {
		err = checkPrefer(r.Header.Values("Prefer"))
	}
	if err != nil {
		e.reject()
		writeError(w, http.StatusBadRequest, e.diagnostics(err))
		return
	}

	j := e.findOrCreateJob(r, req, caller)
	w.Header().Set("Content-Location", serverBase(r)+"/$job?id="+j.id)
	e.mu.Lock()
	etag := fmt.Sprintf(`W/"async-%s-%s"`, e.instanceID, j.id)
	e.mu.Unlock()
	w.Header().Set("ETag", etag)
	writeInfo(w, http.StatusAccepted, acceptedDiagnostics)
}

func (e *Emulator) reject() {
	e.mu.Lock()
	e.counters.Rejected++
	e.mu.Unlock()
}

// diagnostics renders a validation error as Pathling would.
func (e *Emulator) diagnostics(err error) string {
	var ie *inputError
	if errors.As(err, &ie) && e.cfg.JavaErrorPrefix {
		return javaErrorPrefix + ie.msg
	}
	return err.Error()
}

// checkContentType reproduces HAPI's check that an operation's resource body is FHIR (JSON
// here): a missing or non-JSON Content-Type is refused before the body is read.
func checkContentType(ct string) string {
	if strings.TrimSpace(ct) == "" {
		return `No Content-Type header was provided in the request. This is required for "EXTENDED_OPERATION_SERVER" operation`
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		switch strings.ToLower(mt) {
		case "application/fhir+json", "application/json", "application/json+fhir":
			return ""
		}
	}
	return fmt.Sprintf(`Incorrect Content-Type header value of "%s" was provided in the request. A FHIR Content-Type is required for "EXTENDED_OPERATION_SERVER" operation`, ct)
}

// checkAccept reproduces OperationValidation.validateAcceptHeader (not lenient): the first
// Accept header, split on commas and trimmed, must contain an accepted value exactly.
func checkAccept(accept string) error {
	if tokenMatch(accept, acceptedAcceptValues) {
		return nil
	}
	shown := accept
	if accept == "" {
		shown = "null"
	}
	return &requestError{msg: fmt.Sprintf("Unknown 'Accept' header value '%s'. Only %s are allowed.",
		shown, javaList(acceptedAcceptValues))}
}

// checkPrefer reproduces validatePreferHeader: any Prefer header containing the token
// respond-async; the error lists the header values as a Java List.
func checkPrefer(values []string) error {
	for _, v := range values {
		if tokenMatch(v, []string{"respond-async"}) {
			return nil
		}
	}
	return &requestError{msg: fmt.Sprintf("Unknown 'Prefer' header value '%s'. Only %s is allowed.",
		javaList(values), javaList([]string{"respond-async"}))}
}

// tokenMatch is Pathling's Header.validValue.
func tokenMatch(header string, accepted []string) bool {
	if header == "" {
		return false
	}
	for _, tok := range strings.Split(header, ",") {
		tok = strings.TrimSpace(tok)
		for _, a := range accepted {
			if tok == a {
				return true
			}
		}
	}
	return false
}

// javaList formats like java.util.List#toString.
func javaList(items []string) string {
	return "[" + strings.Join(items, ", ") + "]"
}

// findOrCreateJob maps the request to its job (§4 "same request, same job") or starts one.
func (e *Emulator) findOrCreateJob(r *http.Request, req importRequest, caller *principal) *job {
	key, hash := requestKey(completeURL(r), r.Header.Values("Prefer"), r.Header.Values("Authorization"), e.store.version(), req)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.counters.Accepted++
	rc := e.counters.Requests[hash]
	rc.ExportURL, rc.SaveMode = req.ExportURL, req.SaveMode
	rc.KickOffs++

	if j, ok := e.byKey[key]; ok {
		e.counters.Requests[hash] = rc
		return j
	}

	ctx, cancel := context.WithCancel(e.ctx)
	j := &job{
		id:         newJobID(),
		key:        key,
		keyHash:    hash,
		kickOffURL: completeURL(r),
		req:        req,
		caller:     caller,
		created:    e.cfg.Clock(),
		ctx:        ctx,
		cancel:     cancel,
		state:      JobRunning,
		phase:      PhaseExport,
	}
	if caller != nil {
		j.owner, j.hasOwner = caller.subject, caller.hasSubject
	}
	e.jobs[j.id] = j
	e.byKey[key] = j
	e.counters.JobsCreated++
	rc.JobIDs = append(rc.JobIDs, j.id)
	e.counters.Requests[hash] = rc

	switch e.cfg.Mode {
	case ModeScripted:
		s := e.scripts.match(req.ExportURL)
		j.script = &s
	default:
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.runPull(j)
		}()
	}
	e.cfg.Logger.Info("pathling emulator: job created", "job", j.id, "exportUrl", req.ExportURL, "saveMode", req.SaveMode, "mode", e.cfg.Mode.String())
	return j
}
