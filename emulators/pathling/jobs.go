package pathling

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// JobState is a job's lifecycle state.
type JobState string

// Job states.
const (
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// JobPhase is the part of the work a running job is in. Pathling shows X-Progress only in the
// import phase.
type JobPhase string

// Job phases.
const (
	PhaseExport JobPhase = "export" // export, polling and download from the source
	PhaseImport JobPhase = "import" // writing tables (Spark stages in Pathling)
)

// failure is a job failure cause, worded like the Java exception message Pathling reports
// after "Ping and pull import failed: " (hence capitalised, not errors.New).
type failure string

func (f failure) Error() string { return string(f) }

const failurePrefix = "Ping and pull import failed: "

// job is one import job. Its mutable fields are guarded by Emulator.mu.
type job struct {
	id         string
	key        string
	keyHash    string
	kickOffURL string
	req        importRequest
	owner      string
	hasOwner   bool
	caller     *principal // the kick-off's authentication, used inside the job
	created    time.Time
	script     *Script // scripted mode only

	ctx    context.Context
	cancel context.CancelFunc

	state        JobState
	phase        JobPhase
	progress     int // import phase progress, 0..99
	finished     time.Time
	outputs      []string
	cause        string // failure cause, without the "Ping and pull import failed: " prefix
	deleted      bool   // DELETE received: do not start the import phase
	polls        int    // polls that reached this job (scripted jobs advance on them)
	importPolls  int    // scripted: 202 polls answered in the import phase so far
	lastProgress int    // last X-Progress shown
}

// JobInfo describes a job for tests and the control API.
type JobInfo struct {
	ID          string    `json:"id"`
	State       JobState  `json:"state"`
	Phase       JobPhase  `json:"phase,omitempty"`
	Progress    int       `json:"progress"`
	ExportURL   string    `json:"exportUrl"`
	SaveMode    string    `json:"saveMode"`
	Types       []string  `json:"types,omitempty"`
	Since       string    `json:"since,omitempty"`
	RequestKey  string    `json:"requestKey"`
	Owner       string    `json:"owner,omitempty"`
	Created     time.Time `json:"created"`
	Finished    time.Time `json:"finished,omitzero"`
	Polls       int       `json:"polls"`
	Outputs     []string  `json:"outputs,omitempty"`
	Diagnostics string    `json:"diagnostics,omitempty"`
	Cancelled   bool      `json:"cancelled,omitempty"`
}

func (j *job) info() JobInfo {
	in := JobInfo{
		ID:         j.id,
		State:      j.state,
		Progress:   j.progress,
		ExportURL:  j.req.ExportURL,
		SaveMode:   j.req.SaveMode,
		Types:      append([]string(nil), j.req.Types...),
		RequestKey: j.keyHash,
		Owner:      j.owner,
		Created:    j.created,
		Finished:   j.finished,
		Polls:      j.polls,
		Outputs:    append([]string(nil), j.outputs...),
		Cancelled:  j.deleted,
	}
	if j.req.Since != nil {
		in.Since = j.req.Since.UTC().Format(time.RFC3339Nano)
	}
	if j.state == JobRunning {
		in.Phase = j.phase
	}
	if j.state == JobFailed {
		in.Diagnostics = failurePrefix + j.cause
	}
	return in
}

// requestKey reproduces Pathling's RequestTag: the complete URL, the salient headers (Prefer,
// Authorization), the database version and the body's cache key.
func requestKey(url string, prefer, authorization []string, dbVersion string, req importRequest) (key, hash string) {
	key = strings.Join([]string{
		url,
		"prefer=" + strings.Join(prefer, "\x1f"),
		"authorization=" + strings.Join(authorization, "\x1f"),
		"db=" + dbVersion,
		req.cacheKey(),
	}, "\x1e")
	sum := sha256.Sum256([]byte(key))
	return key, hex.EncodeToString(sum[:8])
}

func newJobID() string {
	return uuid.New().String() // version 4, lower case
}

// stagedFileURL is the inputUrl Pathling reports: its staged copy of a downloaded file.
func stagedFileURL(jobID, resourceType string, index int, ext string) string {
	return fmt.Sprintf("%s/staging/pnp/pathling-pnp-import-%s/export-output/%s.%04d.%s",
		warehousePath, jobID, resourceType, index, ext)
}

// JobCounters counts what happened to one job id.
type JobCounters struct {
	Polls         int `json:"polls"`
	InjectedPolls int `json:"injectedPolls"`
	Deletes       int `json:"deletes"`
}

// RequestCounters counts the accepted kick-offs of one distinct request (one job key).
type RequestCounters struct {
	ExportURL string   `json:"exportUrl"`
	SaveMode  string   `json:"saveMode"`
	KickOffs  int      `json:"kickOffs"`
	JobIDs    []string `json:"jobIds"`
}

// Counters is a snapshot of what the emulator has seen since New or the last Reset.
type Counters struct {
	// KickOffs counts every POST $import-pnp received, whatever the answer.
	KickOffs int `json:"kickOffs"`
	// Accepted counts kick-offs answered 202 (new or existing job).
	Accepted int `json:"accepted"`
	// Rejected counts kick-offs answered 4xx by validation or auth.
	Rejected int `json:"rejected"`
	// InjectedKickOffs counts kick-offs answered by an injected response.
	InjectedKickOffs int `json:"injectedKickOffs"`
	// JobsCreated counts new jobs.
	JobsCreated int `json:"jobsCreated"`
	// Restarts counts Restart calls.
	Restarts int `json:"restarts"`
	// Requests counts accepted kick-offs per distinct request, by request key hash.
	Requests map[string]RequestCounters `json:"requests"`
	// Jobs counts polls and deletes per job id (kept after a job is deleted or forgotten).
	Jobs map[string]JobCounters `json:"jobs"`
}

type counters = Counters

func newCounters() Counters {
	return Counters{Requests: map[string]RequestCounters{}, Jobs: map[string]JobCounters{}}
}

func (c Counters) clone() Counters {
	out := c
	out.Requests = make(map[string]RequestCounters, len(c.Requests))
	for k, v := range c.Requests {
		v.JobIDs = append([]string(nil), v.JobIDs...)
		out.Requests[k] = v
	}
	out.Jobs = make(map[string]JobCounters, len(c.Jobs))
	for k, v := range c.Jobs {
		out.Jobs[k] = v
	}
	return out
}

// Counters returns a snapshot of the counters.
func (e *Emulator) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counters.clone()
}
