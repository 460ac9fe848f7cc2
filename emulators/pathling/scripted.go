package pathling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Outcomes of a scripted job.
const (
	OutcomeDone = "done"
	OutcomeFail = "fail"
)

const defaultFailure = "No files with extension .ndjson were downloaded"

// Script says how a scripted job behaves. Jobs advance deterministically: by the number of
// polls that reach them (default), or by the emulator clock when Duration is set.
//
// JSON form (control API): durations are Go duration strings ("1.5s").
//
//	{"exportUrl":"https://src/fhir","polls":3,"exportPolls":1,"progress":[40,80],
//	 "outcome":"fail","failure":"Async Http resonse error: [statusCode: 500]","outputs":2,
//	 "types":["Patient","Observation"]}
type Script struct {
	// ExportURL selects the jobs this script applies to (exact match on the exportUrl
	// parameter). Empty for the default script.
	ExportURL string `json:"exportUrl,omitempty"`
	// Polls is the number of polls answered 202 before the job's outcome shows (0: the first
	// poll already sees it). Ignored when Duration is set.
	Polls int `json:"polls,omitempty"`
	// ExportPolls is how many of those 202 polls belong to the export phase (no X-Progress);
	// the rest are import-phase polls with X-Progress.
	ExportPolls int `json:"exportPolls,omitempty"`
	// Duration, when set, makes the job finish that long after its kick-off (emulator clock).
	Duration time.Duration `json:"-"`
	// ImportAfter is, with Duration, when the import phase (X-Progress) starts.
	ImportAfter time.Duration `json:"-"`
	// Progress lists the X-Progress percentages of successive import-phase polls (the last
	// repeats). Empty: evenly spread. Pathling never shows 100%: a value >= 100 repeats the
	// previous one.
	Progress []int `json:"progress,omitempty"`
	// Outcome is OutcomeDone (default) or OutcomeFail.
	Outcome string `json:"outcome,omitempty"`
	// Failure is the cause shown after "Ping and pull import failed: " when Outcome is
	// OutcomeFail. Default: "No files with extension .ndjson were downloaded".
	Failure string `json:"failure,omitempty"`
	// Outputs is the number of output entries of a done job. Nil means 1.
	Outputs *int `json:"outputs,omitempty"`
	// Types names the resource types of the outputs (cycled). Default: the request's _type
	// values, else Patient.
	Types []string `json:"types,omitempty"`
}

// MarshalJSON writes durations as Go duration strings.
func (s Script) MarshalJSON() ([]byte, error) {
	type plain Script
	aux := struct {
		plain
		Duration    string `json:"duration,omitempty"`
		ImportAfter string `json:"importAfter,omitempty"`
	}{plain: plain(s)}
	if s.Duration > 0 {
		aux.Duration = s.Duration.String()
	}
	if s.ImportAfter > 0 {
		aux.ImportAfter = s.ImportAfter.String()
	}
	return json.Marshal(aux)
}

// UnmarshalJSON reads durations as Go duration strings and rejects values that make no sense.
func (s *Script) UnmarshalJSON(b []byte) error {
	type plain Script
	aux := struct {
		*plain
		Duration    string `json:"duration,omitempty"`
		ImportAfter string `json:"importAfter,omitempty"`
	}{plain: (*plain)(s)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	var err error
	if aux.Duration != "" {
		if s.Duration, err = time.ParseDuration(aux.Duration); err != nil {
			return fmt.Errorf("duration: %w", err)
		}
	}
	if aux.ImportAfter != "" {
		if s.ImportAfter, err = time.ParseDuration(aux.ImportAfter); err != nil {
			return fmt.Errorf("importAfter: %w", err)
		}
	}
	return s.validate()
}

func (s Script) validate() error {
	if s.Polls < 0 || s.ExportPolls < 0 || s.Duration < 0 || s.ImportAfter < 0 {
		return fmt.Errorf("negative polls or durations")
	}
	if s.Outcome != "" && s.Outcome != OutcomeDone && s.Outcome != OutcomeFail {
		return fmt.Errorf("outcome must be %q or %q", OutcomeDone, OutcomeFail)
	}
	if s.Outputs != nil && *s.Outputs < 0 {
		return fmt.Errorf("negative outputs")
	}
	return nil
}

type scripts struct {
	def   Script
	byURL map[string]Script
}

func newScripts() scripts {
	return scripts{byURL: map[string]Script{}}
}

func (s scripts) match(exportURL string) Script {
	if sc, ok := s.byURL[exportURL]; ok {
		return sc
	}
	return s.def
}

// SetDefaultScript sets the script of scripted jobs whose exportUrl has no script of its own.
// It applies to jobs created afterwards.
func (e *Emulator) SetDefaultScript(s Script) error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("pathling emulator: script: %w", err)
	}
	s.ExportURL = ""
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scripts.def = s
	return nil
}

// Script sets the script for jobs whose exportUrl equals s.ExportURL (replacing an earlier one);
// with an empty ExportURL it sets the default script. It applies to jobs created afterwards.
func (e *Emulator) Script(s Script) error {
	if s.ExportURL == "" {
		return e.SetDefaultScript(s)
	}
	if err := s.validate(); err != nil {
		return fmt.Errorf("pathling emulator: script: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scripts.byURL[s.ExportURL] = s
	return nil
}

// ClearScripts removes every script: scripted jobs then finish at their first poll with one
// output.
func (e *Emulator) ClearScripts() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scripts = newScripts()
}

// advanceScripted moves a scripted job along after a poll. Callers hold e.mu; j.polls already
// counts this poll.
func (e *Emulator) advanceScripted(j *job, now time.Time) {
	if j.state != JobRunning {
		return
	}
	s := j.script
	if s.Duration > 0 {
		elapsed := now.Sub(j.created)
		if elapsed >= s.Duration {
			e.finishScripted(j, j.created.Add(s.Duration))
			return
		}
		if elapsed < s.ImportAfter {
			j.phase = PhaseExport
			return
		}
		j.phase = PhaseImport
		span := s.Duration - s.ImportAfter
		pct := int((elapsed - s.ImportAfter) * 100 / span)
		if len(s.Progress) > 0 {
			j.importPolls++
			pct = s.Progress[min(j.importPolls, len(s.Progress))-1]
		}
		e.showProgress(j, pct)
		return
	}
	if j.polls > s.Polls {
		e.finishScripted(j, now)
		return
	}
	if j.polls <= s.ExportPolls {
		j.phase = PhaseExport
		return
	}
	j.phase = PhaseImport
	j.importPolls++
	pct := j.importPolls * 100 / (s.Polls - s.ExportPolls + 1)
	if len(s.Progress) > 0 {
		pct = s.Progress[min(j.importPolls, len(s.Progress))-1]
	}
	e.showProgress(j, pct)
}

// showProgress sets the X-Progress value, never 100% (Pathling repeats the last value).
func (e *Emulator) showProgress(j *job, pct int) {
	if pct < 0 {
		pct = 0
	}
	if pct >= 100 {
		j.progress = j.lastProgress
		return
	}
	j.progress, j.lastProgress = pct, pct
}

func (e *Emulator) finishScripted(j *job, at time.Time) {
	s := j.script
	j.finished = at
	if s.Outcome == OutcomeFail {
		j.state = JobFailed
		j.cause = s.Failure
		if j.cause == "" {
			j.cause = defaultFailure
		}
		return
	}
	n := 1
	if s.Outputs != nil {
		n = *s.Outputs
	}
	types := s.Types
	if len(types) == 0 {
		types = j.req.Types
	}
	if len(types) == 0 {
		types = []string{"Patient"}
	}
	perType := map[string]int{}
	var outputs []string
	for i := 0; i < n; i++ {
		t := types[i%len(types)]
		outputs = append(outputs, stagedFileURL(j.id, t, perType[t], j.req.extension()))
		perType[t]++
	}
	// Pathling checks the write authorities only now, after the download.
	if e.cfg.Auth != nil {
		if msg := writeAuthorityFailure(j.caller, sortedKeys(perType)); msg != "" {
			j.state, j.cause = JobFailed, msg
			return
		}
	}
	j.state, j.outputs = JobDone, outputs
	if n > 0 {
		// The import wrote tables: the database version moves on, as in Pathling.
		e.store.touch(at)
	}
}

// writeAuthorityFailure reproduces ImportExecutor.checkAuthority: pathling:write, then
// pathling:write:<Type> for each imported type. It returns "" when all are held.
func writeAuthorityFailure(p *principal, types []string) string {
	if !p.has("pathling:write") {
		return missingAuthority("pathling:write")
	}
	for _, t := range types {
		if !p.has("pathling:write:" + t) {
			return missingAuthority("pathling:write:" + t)
		}
	}
	return ""
}

// Targets of injected responses.
const (
	TargetKickOff = "kickoff"
	TargetPoll    = "poll"
	TargetDelete  = "delete"
)

// Injection makes the next Count requests to Target answer Status instead of reaching the
// emulator's logic (what a proxy, a load balancer or an overloaded server would do).
type Injection struct {
	// Target is TargetKickOff, TargetPoll or TargetDelete.
	Target string `json:"target"`
	// JobID limits a poll or delete injection to one job id.
	JobID string `json:"jobId,omitempty"`
	// Status is the HTTP status to answer (e.g. 503, 429, 500).
	Status int `json:"status"`
	// Count is how many requests get it (default 1).
	Count int `json:"count,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header (seconds or an HTTP date).
	RetryAfter string `json:"retryAfter,omitempty"`
	// Diagnostics is the OperationOutcome text (default: the status text).
	Diagnostics string `json:"diagnostics,omitempty"`
	// Body, when set, replaces the OperationOutcome body verbatim.
	Body string `json:"body,omitempty"`
	// ContentType goes with Body (default application/fhir+json;charset=utf-8).
	ContentType string `json:"contentType,omitempty"`
}

func (in *Injection) validate() error {
	switch in.Target {
	case TargetKickOff, TargetPoll, TargetDelete:
	default:
		return fmt.Errorf("target must be %q, %q or %q", TargetKickOff, TargetPoll, TargetDelete)
	}
	if in.Status < 100 || in.Status > 599 {
		return fmt.Errorf("status %d out of range", in.Status)
	}
	if in.Count < 0 {
		return fmt.Errorf("negative count")
	}
	if in.RetryAfter != "" {
		if _, err := strconv.Atoi(in.RetryAfter); err != nil {
			if _, err := http.ParseTime(in.RetryAfter); err != nil {
				return fmt.Errorf("retryAfter must be seconds or an HTTP date")
			}
		}
	}
	return nil
}

func (in *Injection) write(w http.ResponseWriter) {
	if in.RetryAfter != "" {
		w.Header().Set("Retry-After", in.RetryAfter)
	}
	if in.Body != "" {
		ct := in.ContentType
		if ct == "" {
			ct = contentTypeFHIRJSON
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(in.Status)
		_, _ = w.Write([]byte(in.Body))
		return
	}
	diag := in.Diagnostics
	if diag == "" {
		diag = http.StatusText(in.Status)
	}
	code := "processing"
	switch {
	case in.Status == http.StatusTooManyRequests:
		code = "throttled"
	case in.Status == http.StatusServiceUnavailable || in.Status == http.StatusGatewayTimeout:
		code = "transient"
	case in.Status == http.StatusForbidden:
		code = "forbidden"
	}
	sev := "error"
	if in.Status < 400 {
		sev = "information"
		code = "informational"
	}
	writeFHIR(w, in.Status, outcome(sev, code, diag))
}

// Inject queues an injected response (see Injection). Injections are consumed in order.
func (e *Emulator) Inject(in Injection) error {
	if in.Count == 0 {
		in.Count = 1
	}
	if err := in.validate(); err != nil {
		return fmt.Errorf("pathling emulator: inject: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.injections = append(e.injections, &in)
	return nil
}

// takeInjection consumes one pending injection for the target (and job id). Callers hold e.mu.
func (e *Emulator) takeInjection(target, jobID string) *Injection {
	for i, in := range e.injections {
		if in.Target != target || (in.JobID != "" && in.JobID != jobID) {
			continue
		}
		in.Count--
		if in.Count <= 0 {
			e.injections = append(e.injections[:i], e.injections[i+1:]...)
		}
		cp := *in
		return &cp
	}
	return nil
}

// ClearInjections drops every pending injection (an outage made of injections ends at once).
func (e *Emulator) ClearInjections() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.injections = nil
}

// PendingInjections returns the injections not yet consumed.
func (e *Emulator) PendingInjections() []Injection {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Injection, 0, len(e.injections))
	for _, in := range e.injections {
		out = append(out, *in)
	}
	return out
}
