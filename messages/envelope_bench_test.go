package messages_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/messages"
)

var sinkEnvelope messages.Envelope

// BenchmarkReadEnvelope reads a SyncRequested's envelope as the handler
// does, from headers without tracestate or ce-replayof.
func BenchmarkReadEnvelope(b *testing.B) {
	h := nats.Header{}
	messages.NewRequestEnvelope("req-123456", "test", "t1", time.Now(),
		messages.WithTraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")).WriteTo(h)
	for b.Loop() {
		sinkEnvelope, _ = messages.ReadEnvelope(h)
	}
}
