package pathling

import (
	"net/http"
	"regexp"
	"strconv"
	"time"
)

const (
	processingDiagnostics = "Job currently processing"
	deletedDiagnostics    = "The job and its resources will be deleted."
	jobNotFound           = "Job ID not found"
	notOwned              = "The requested job is not owned by the current user"
	varyHeader            = "Accept,Accept-Encoding,Prefer,Authorization"
)

// jobIDPattern is JobProvider's ID_PATTERN: anything else is "not found" without a lookup.
var jobIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// transactionTimeFormat is HAPI's InstantType.now().getValueAsString() on a JVM running in UTC:
// millisecond precision and an explicit +00:00 offset.
const transactionTimeFormat = "2006-01-02T15:04:05.000"

func formatTransactionTime(t time.Time) string {
	return t.UTC().Format(transactionTimeFormat) + "+00:00"
}

// handleJobGet is GET /fhir/$job?id=.
func (e *Emulator) handleJobGet(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	e.mu.Lock()
	inj := e.takeInjection(TargetPoll, id)
	if inj != nil {
		jc := e.counters.Jobs[id]
		jc.InjectedPolls++
		e.counters.Jobs[id] = jc
	}
	e.mu.Unlock()
	if inj != nil {
		inj.write(w)
		return
	}

	caller, err := e.authenticate(r)
	if err != nil {
		writeUnauthorized(w, err)
		return
	}
	w.Header().Set("Vary", varyHeader)

	e.mu.Lock()
	jc := e.counters.Jobs[id]
	jc.Polls++
	e.counters.Jobs[id] = jc
	j := e.lookup(id)
	if j == nil {
		e.mu.Unlock()
		writeError(w, http.StatusNotFound, jobNotFound)
		return
	}
	if e.cfg.Auth != nil {
		if !caller.has("pathling:import-pnp") {
			e.mu.Unlock()
			writeError(w, http.StatusForbidden, missingAuthority("pathling:import-pnp"))
			return
		}
		if !ownerMatches(j.owner, j.hasOwner, caller) {
			e.mu.Unlock()
			writeError(w, http.StatusForbidden, notOwned)
			return
		}
	}
	j.polls++
	if j.script != nil {
		e.advanceScripted(j, e.cfg.Clock())
	}
	state, phase, progress := j.state, j.phase, j.progress
	finished, outputs, cause := j.finished, append([]string(nil), j.outputs...), j.cause
	kickOffURL := j.kickOffURL
	e.mu.Unlock()

	switch state {
	case JobRunning:
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("ETag", `W/"0"`)
		if phase == PhaseImport {
			w.Header().Set("X-Progress", strconv.Itoa(progress)+"%")
		}
		writeInfo(w, http.StatusAccepted, processingDiagnostics)
	case JobFailed:
		writeError(w, http.StatusBadRequest, e.failureDiagnostics(cause))
	case JobDone:
		w.Header().Set("Cache-Control", "max-age=1")
		if tokenMatch(r.Header.Get("Accept"), []string{"application/fhir+json"}) {
			writeFHIR(w, http.StatusOK, resultParameters(finished, kickOffURL, outputs))
			return
		}
		w.Header().Set("Content-Type", contentTypePlainJSON)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(compactJSON(plainResult(finished, kickOffURL, outputs)))
	}
}

// failureDiagnostics is the text of a job failure at $job.
func (e *Emulator) failureDiagnostics(cause string) string {
	msg := failurePrefix + cause
	if e.cfg.JavaErrorPrefix {
		return javaErrorPrefix + msg
	}
	return msg
}

// lookup returns a known job, or nil. Callers hold e.mu.
func (e *Emulator) lookup(id string) *job {
	if !jobIDPattern.MatchString(id) {
		return nil
	}
	return e.jobs[id]
}

// resultParameters is ImportResponse.toOutput.
func resultParameters(finished time.Time, kickOffURL string, outputs []string) parameters {
	p := parameters{ResourceType: "Parameters"}
	p.Parameter = append(p.Parameter,
		parameter{Name: "transactionTime", ValueString: formatTransactionTime(finished)},
		parameter{Name: "request", ValueString: kickOffURL})
	for _, o := range outputs {
		p.Parameter = append(p.Parameter, parameter{Name: "output", Part: []parameter{{Name: "inputUrl", ValueURL: o}}})
	}
	return p
}

// plainResult is the body Pathling writes when the poll's Accept lacks application/fhir+json:
// "output" is an object for exactly one output and an array for two or more.
func plainResult(finished time.Time, kickOffURL string, outputs []string) any {
	type inputURL struct {
		InputURL string `json:"inputUrl"`
	}
	type result struct {
		TransactionTime string `json:"transactionTime"`
		Request         string `json:"request"`
		Output          any    `json:"output,omitempty"`
	}
	res := result{TransactionTime: formatTransactionTime(finished), Request: kickOffURL}
	switch len(outputs) {
	case 0:
	case 1:
		res.Output = inputURL{InputURL: outputs[0]}
	default:
		list := make([]inputURL, 0, len(outputs))
		for _, o := range outputs {
			list = append(list, inputURL{InputURL: o})
		}
		res.Output = list
	}
	return res
}

// handleJobDelete is DELETE /fhir/$job?id=. Pathling makes no ownership check here.
func (e *Emulator) handleJobDelete(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	e.mu.Lock()
	inj := e.takeInjection(TargetDelete, id)
	e.mu.Unlock()
	if inj != nil {
		inj.write(w)
		return
	}
	if _, err := e.authenticate(r); err != nil {
		writeUnauthorized(w, err)
		return
	}

	e.mu.Lock()
	jc := e.counters.Jobs[id]
	jc.Deletes++
	e.counters.Jobs[id] = jc
	j := e.lookup(id)
	if j == nil {
		e.mu.Unlock()
		writeError(w, http.StatusNotFound, jobNotFound)
		return
	}
	// Best-effort cancel: a pulling job finishes its export and downloads, then stops before
	// the import phase.
	j.deleted = true
	delete(e.jobs, j.id)
	if e.byKey[j.key] == j {
		delete(e.byKey, j.key)
	}
	e.mu.Unlock()
	writeInfo(w, http.StatusAccepted, deletedDiagnostics)
}
