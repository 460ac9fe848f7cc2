package pathling

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// State is where a Pathling job stands.
type State int

const (
	// StateRunning: 202, poll again.
	StateRunning State = iota
	// StateDone: 200, JobStatus.Result holds the result.
	StateDone
	// StateFailed: 400, JobStatus.Failure says why and whether a new
	// attempt may succeed (DELETE the job first: Pathling caches failures).
	StateFailed
	// StateLost: 404, Pathling does not know the job (deleted, or Pathling
	// restarted). JobStatus.Failure is KindJobLost.
	StateLost
)

// String returns "running", "done", "failed" or "lost".
func (s State) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateDone:
		return "done"
	case StateFailed:
		return "failed"
	case StateLost:
		return "lost"
	}
	return "unknown"
}

// JobStatus is one answer of the status URL.
type JobStatus struct {
	State State
	// Progress is X-Progress as sent (e.g. "42%"), empty if absent. Pathling
	// sends it only during the import phase.
	Progress string
	// RetryAfter is the server's Retry-After, 0 if absent (Pathling never
	// sends it, but a proxy or another server might). Not clamped: apply
	// your own bounds.
	RetryAfter time.Duration
	// Result is set for StateDone.
	Result *ImportResult
	// Failure is set for StateFailed (KindImportFailed or KindEmptyExport)
	// and StateLost (KindJobLost).
	Failure *Error
	// HTTPStatus is the status code received.
	HTTPStatus int
	// ServerDate is the response's Date header (the server's clock, whole
	// seconds), zero when absent: callers measure clock skew with it.
	ServerDate time.Time
}

// Status polls a job: GET statusURL with Accept: application/fhir+json.
// The job's fate is in JobStatus; an error means only that this poll did not
// yield an answer, and is an *Error:
//   - KindUnauthorized: 401 again after one retry with a fresh token, or no
//     token could be obtained;
//   - KindForbidden: 403 (e.g. the token's sub does not own the job);
//   - KindUnavailable: network error, timeout, 408, 429 or 5xx; retryable
//     (RetryAfter set when sent), unless ctx itself ended;
//   - KindProtocol: an unexpected status, an unparsable 200 body, or a
//     statusURL that is not an absolute http(s) URL.
//
// A 400 (job failed) is classified from its diagnostics:
//
//	diagnostics contain (case-insensitive)                Kind              Retryable
//	"No files with extension" + "were downloaded"         KindEmptyExport   no
//	"Async Http resonse error" + "statusCode: 5xx"        KindImportFailed  yes  (source 5xx)
//	"statusCode: 429"                                     KindImportFailed  yes  (source throttling)
//	"Download failed"                                     KindImportFailed  yes
//	"System error in bulk export"                         KindImportFailed  yes
//	"Another import operation"                            KindImportFailed  yes  (Pathling's import lock)
//	"Connection refused", "timed out", "UnknownHost",
//	"I/O error"                                           KindImportFailed  yes  (network)
//	anything else (source 4xx, origin mismatch, static
//	export type, missing pathling:write, ...)             KindImportFailed  no
//
// ("resonse" is Pathling's spelling; "response" is accepted too.)
// A 404 is StateLost with Failure KindJobLost, Retryable (kick off again).
func (c *Client) Status(ctx context.Context, statusURL string) (JobStatus, error) {
	const op = "status"
	target, err := checkStatusURL(op, statusURL)
	if err != nil {
		return JobStatus{}, err
	}
	r, err := c.send(ctx, op, http.MethodGet, target, nil, c.headers.get)
	if err != nil {
		return JobStatus{}, err
	}
	defer r.release()
	st := JobStatus{
		HTTPStatus: r.status,
		ServerDate: r.date,
		Progress:   strings.TrimSpace(r.header.Get("X-Progress")),
		RetryAfter: parseRetryAfter(r.header.Get("Retry-After"), c.clock.Now()),
	}
	switch r.status {
	case http.StatusAccepted:
		st.State = StateRunning
		return st, nil
	case http.StatusOK:
		res, err := ParseImportResult(r.body, r.header.Get("Content-Type"))
		if err != nil {
			return JobStatus{}, &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status,
				Message: "unreadable import result", Err: err}
		}
		st.State, st.Result = StateDone, res
		return st, nil
	case http.StatusBadRequest:
		f := &Error{Op: op, Kind: KindImportFailed, HTTPStatus: r.status}
		describe(f, r)
		diagnostics := f.Message // clipped: classify on the full text
		if f.Outcome != nil {
			diagnostics = f.Outcome.Diagnostics()
		}
		f.Kind, f.Retryable = classifyFailure(diagnostics)
		st.State, st.Failure = StateFailed, f
		return st, nil
	case http.StatusNotFound:
		f := &Error{Op: op, Kind: KindJobLost, HTTPStatus: r.status, Retryable: true}
		describe(f, r)
		st.State, st.Failure = StateLost, f
		return st, nil
	}
	if e := c.statusError(op, r); e != nil {
		return JobStatus{}, e
	}
	e := &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status}
	describe(e, r)
	return JobStatus{}, e
}

// Delete forgets a job (and cancels it, best-effort, if it is running):
// DELETE statusURL. 202 (or another 2xx) and 404 (already gone) return nil.
// Errors are *Error: KindUnauthorized, KindForbidden, KindUnavailable
// (retryable) and KindProtocol as for Status.
func (c *Client) Delete(ctx context.Context, statusURL string) error {
	const op = "delete"
	target, err := checkStatusURL(op, statusURL)
	if err != nil {
		return err
	}
	r, err := c.send(ctx, op, http.MethodDelete, target, nil, c.headers.get)
	if err != nil {
		return err
	}
	defer r.release()
	if r.status/100 == 2 || r.status == http.StatusNotFound {
		return nil
	}
	if e := c.statusError(op, r); e != nil {
		return e
	}
	e := &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status}
	describe(e, r)
	return e
}

// checkStatusURL parses statusURL for the request (once per call).
func checkStatusURL(op, statusURL string) (*url.URL, error) {
	u, err := url.Parse(statusURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, &Error{Op: op, Kind: KindProtocol, Message: "status URL must be an absolute http(s) URL without userinfo"}
	}
	removeEmptyPort(u) // after the check, as before the request was built from the string
	return u, nil
}

var (
	emptyExportPattern = regexp.MustCompile(`(?is)No files with extension.*were downloaded`)
	// retryableFailurePatterns are causes that may be gone on the next try.
	retryableFailurePatterns = []*regexp.Regexp{
		regexp.MustCompile(`(?is)Async Http resp?onse error.*statusCode:\s*5\d\d`),
		regexp.MustCompile(`(?i)statusCode:\s*429`),
		regexp.MustCompile(`(?i)Download failed`),
		regexp.MustCompile(`(?i)System error in bulk export`),
		regexp.MustCompile(`(?i)Another import operation`),
		regexp.MustCompile(`(?i)Connection refused|timed out|UnknownHost|I/O error`),
	}
)

// classifyFailure tells from a failed job's diagnostics what kind of failure
// it is and whether trying again may help (see the table on Status).
func classifyFailure(diagnostics string) (Kind, bool) {
	if emptyExportPattern.MatchString(diagnostics) {
		return KindEmptyExport, false
	}
	for _, p := range retryableFailurePatterns {
		if p.MatchString(diagnostics) {
			return KindImportFailed, true
		}
	}
	return KindImportFailed, false
}
