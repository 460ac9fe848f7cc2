// Package messages is the event contract of pathling-sync (service contract §1): the three event
// bodies (SyncRequested, SyncCompleted, SyncFailed), the strict decoder and validator for incoming
// requests, the subject layout, the CloudEvents 1.0 binary-mode envelope carried in NATS headers,
// deterministic outcome ids, and the published JSON Schemas.
//
// The package does no I/O: it only turns bytes and headers into values and back, so every other
// package (the consumer, the CLI, schedules, chains) shares one definition of what a valid event is.
package messages
