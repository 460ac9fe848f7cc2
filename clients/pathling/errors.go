package pathling

import (
	"fmt"
	"time"
)

// Kind says what went wrong in terms a caller can act on.
type Kind string

// The kinds of Error.
const (
	// KindRejected: Pathling refused the kick-off (400, or a request the
	// client refused to send). Final: the same request fails again.
	KindRejected Kind = "rejected"
	// KindImportFailed: the job ran and failed (400 at $job). Error.Retryable
	// tells a transient cause (source 5xx, network, import lock) from a final one.
	KindImportFailed Kind = "import_failed"
	// KindEmptyExport: the job failed because the export had no files, which
	// is what an incremental export with no changes yields. Not retryable.
	KindEmptyExport Kind = "empty_export"
	// KindUnauthorized: 401 even with a freshly fetched token, or no token
	// could be had from the token source.
	KindUnauthorized Kind = "unauthorized"
	// KindForbidden: 403, the token lacks an authority or does not own the job.
	KindForbidden Kind = "forbidden"
	// KindUnavailable: Pathling could not be reached or answered 429/5xx.
	// Retryable unless the caller's own context ended.
	KindUnavailable Kind = "unavailable"
	// KindJobLost: the status URL answers 404 (unknown id, deleted job, or
	// Pathling restarted). Kicking off again is the remedy.
	KindJobLost Kind = "job_lost"
	// KindProtocol: Pathling answered something this client does not
	// understand (no Content-Location, unexpected status, unparsable result).
	KindProtocol Kind = "protocol"
)

// Error is a failed call or a failed job. Kind carries the decision; HTTPStatus
// and Outcome carry what Pathling said.
type Error struct {
	// Op is the operation: "kick-off", "status" or "delete".
	Op   string
	Kind Kind
	// HTTPStatus is Pathling's status code, 0 if no response was received.
	HTTPStatus int
	// Retryable tells whether the same call (or, for a failed job, the same
	// import after deleting the job) may succeed later.
	Retryable bool
	// RetryAfter is the server's Retry-After, 0 if none.
	RetryAfter time.Duration
	// Message is human readable: Pathling's diagnostics without a leading
	// Java class name, or a description of the problem. Never a secret.
	Message string
	// Outcome is the OperationOutcome Pathling sent, if any.
	Outcome *OperationOutcome
	// Err is the underlying cause (network, context, token source), if any.
	Err error
}

// Error reads "pathling: <op>: <kind> (HTTP <status>): <message>: <cause>".
func (e *Error) Error() string {
	msg := "pathling: " + e.Op + ": " + string(e.Kind)
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel (or an *Error) of the same Kind,
// so errors.Is(err, ErrEmptyExport) works on any wrapped *Error.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *kindError:
		return t.kind == e.Kind
	case *Error:
		return t.Kind == e.Kind
	}
	return false
}

// kindError is the type of the sentinels: immutable, matched by Kind.
type kindError struct{ kind Kind }

func (k *kindError) Error() string { return "pathling: " + string(k.kind) }

// Sentinels for errors.Is, one per Kind.
var (
	ErrRejected     error = &kindError{KindRejected}
	ErrImportFailed error = &kindError{KindImportFailed}
	ErrEmptyExport  error = &kindError{KindEmptyExport}
	ErrUnauthorized error = &kindError{KindUnauthorized}
	ErrForbidden    error = &kindError{KindForbidden}
	ErrUnavailable  error = &kindError{KindUnavailable}
	ErrJobLost      error = &kindError{KindJobLost}
	ErrProtocol     error = &kindError{KindProtocol}
)

var _ interface {
	error
	Unwrap() error
	Is(error) bool
} = (*Error)(nil)
