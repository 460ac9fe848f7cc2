package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// BenchmarkPrecedence is one lone request's question with a message of
// another subject before it: the floor cached, one look-up of the
// subject's first message after the floor.
func BenchmarkPrecedence(b *testing.B) {
	ctx := context.Background()
	bus := newBus(b)
	bus.precedenceConsumer(b)
	bus.request(b, "a", "a1") // delivered to no one: the floor stays below it
	seq := bus.request(b, "b", "b1")
	p := NewPrecedence(bus.js, DefaultStreamName, "prec", time.Hour)
	subj := messages.Subjects{}.Requested("b")
	b.ReportAllocs()
	for b.Loop() {
		if earlier, err := p.EarlierUnsettled(ctx, subj, seq); err != nil || earlier {
			b.Fatal(earlier, err)
		}
	}
}
