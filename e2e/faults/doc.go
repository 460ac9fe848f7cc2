// Package faults is the fault suite: real pathling-sync processes against real nats-server and
// redis-server processes (single nodes, a 3-node JetStream cluster with R3 streams, a 3-master
// Redis Cluster) and the two emulators, all on 127.0.0.1, with faults injected from outside
// (kill -9, SIGTERM, SIGSTOP, restarts, HTTP error bursts, clock skew, bad input). Each scenario
// checks the service's promises and prints one table row; see docs/reliability.md.
//
// The tests skip unless PATHLING_SYNC_FAULTS is set: "all" (or "1") runs every scenario, "ci"
// the bounded subset CI runs, anything else a comma-separated list of scenario names.
// `make faults` and `make faults-ci` set it.
package faults
