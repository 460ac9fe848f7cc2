// Package pathling emulates the server side of Pathling's $import-pnp ("ping and pull" bulk
// import) as Pathling's source code behaves (see README.md beside it): the kick-off with Pathling's
// validation order and messages, the $job status endpoint (202/200/400/404, X-Progress only in
// the import phase, the plain-JSON variant), DELETE, "same request, same job", optional JWT
// authentication with Pathling's authorities, and a CapabilityStatement.
//
// In ModePull (the default) a job really does what Pathling does against the source: GET
// <exportUrl>/$export, poll with Retry-After, download the NDJSON output files, DELETE the
// export, then apply the save mode to an in-memory resource store that tests can read back
// (Resources, or GET /fhir/<Type>). In ModeScripted jobs contact nothing; a Script decides how
// each advances (by polls or by the emulator clock) and how it ends.
//
// The Emulator is an http.Handler: mount it at the root of a server; it serves /fhir/... and the
// JSON control API under /_emulator/ (see README.md). Jobs live in memory; Restart forgets them
// as a Pathling restart would, Close stops their goroutines.
package pathling
