// Package pathling is a client for Pathling's ping-and-pull bulk import,
// `$import-pnp`: kick off an import, poll its job, and delete the job.
//
// It follows the wire contract Pathling's code implements (not always what
// its docs say): exportUrl as valueUrl, _since/_until as valueInstant,
// saveMode as valueCode, the exact `Accept: application/fhir+json`, and a
// result whose transactionTime is a valueString.
//
// The client never loops on its own: each call makes one request (two after
// a 401: the token is invalidated and one fresh try is made) and returns an
// *Error whose Kind and Retryable let the caller decide what to do next.
// errors.Is works with the sentinels (ErrEmptyExport, ErrJobLost, ...).
//
// Polling: Status returns the job's state in a JobStatus; only failures of
// the poll itself are errors. A job failure (HTTP 400 at $job) is classified
// from Pathling's diagnostics, since the status code cannot tell a transient
// cause from a final one; see Status for the table.
package pathling
