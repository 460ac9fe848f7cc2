package natsbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// doubleAckWithin (the settle path) fails as DoubleAck under a deadline does, so the log of a
// failed settlement reads the same: a timeout is context.DeadlineExceeded, no responder is
// nats.ErrNoResponders; and a confirmation is nil.
func TestDoubleAckWithinFailsAsDoubleAckUnderADeadline(t *testing.T) {
	b := newBus(t)
	silent, err := b.nc.SubscribeSync("test.silent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Unsubscribe() })
	answering, err := b.nc.Subscribe("test.answering", func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = answering.Unsubscribe() })
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for reply, want := range map[string]error{
		"test.silent":    context.DeadlineExceeded,
		"test.nobody":    nats.ErrNoResponders,
		"test.answering": nil,
	} {
		a := replyAcks{nc: b.nc, subject: "s", reply: reply}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		viaCtx := a.DoubleAck(ctx)
		cancel()
		within := a.doubleAckWithin(100 * time.Millisecond)
		if !errors.Is(viaCtx, want) || !errors.Is(within, want) || (want == nil) != (within == nil) ||
			(within != nil && within.Error() != viaCtx.Error()) {
			t.Errorf("%s: DoubleAck %v, doubleAckWithin %v, want %v", reply, viaCtx, within, want)
		}
	}
}
