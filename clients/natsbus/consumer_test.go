package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// acked reports whether everything up to seq is acked (or terminated) and nothing is pending.
func acked(t *testing.T, b *bus, seq uint64) func() bool {
	return func() bool {
		info := b.consumerInfo(t, DefaultDurable)
		return info.AckFloor.Stream >= seq && info.NumAckPending == 0 && info.NumPending == 0
	}
}

func TestConsumerStartsAtNewMessagesAndPassesTheDelivery(t *testing.T) {
	b := newBus(t)
	b.request(t, "t1", "old-1")
	b.request(t, "t1", "old-2")

	rec := &recorder{}
	b.start(t, ConsumerConfig{}, rec.handle)
	seq := b.request(t, "t1", "new-1")

	testenv.Eventually(t, 5*time.Second, acked(t, b, seq), "new message acked")
	got := rec.deliveries()
	if len(got) != 1 {
		t.Fatalf("handled %d messages, want only the one published after the consumer: %+v", len(got), got)
	}
	d := got[0]
	if d.Subject != "pathling.sync.requested.t1" || d.Stream != DefaultStreamName || d.StreamSeq != seq ||
		d.NumDelivered != 1 || string(d.Data) != `{}` || d.Published.IsZero() {
		t.Fatalf("delivery = %+v", d.Delivery)
	}
	if v := d.Header["ce-id"]; len(v) != 1 || v[0] != "new-1" {
		t.Fatalf("ce-id header = %q in %v", v, d.Header)
	}
	info := b.consumerInfo(t, DefaultDurable)
	if info.Config.DeliverPolicy != jetstream.DeliverNewPolicy || info.Config.AckPolicy != jetstream.AckExplicitPolicy ||
		info.Config.FilterSubject != DefaultFilterSubject || info.Config.AckWait != DefaultAckWait ||
		info.Config.MaxDeliver != -1 || info.Config.MaxAckPending != -1 {
		t.Fatalf("consumer config = %+v", info.Config)
	}
	if info.Delivered.Consumer != 1 {
		t.Fatalf("consumer delivered %d messages, want 1", info.Delivered.Consumer)
	}
}

func TestConsumerUpdatesExistingConsumerAndKeepsItsPosition(t *testing.T) {
	b := newBus(t)
	first := b.start(t, ConsumerConfig{AckWait: time.Second}, (&recorder{}).handle)
	seq1 := b.request(t, "t1", "r1")
	testenv.Eventually(t, 5*time.Second, acked(t, b, seq1), "first message acked")
	first.stop(t)
	created := b.consumerInfo(t, DefaultDurable).Created

	// Published while no replica runs: the existing consumer must still get it.
	seq2 := b.request(t, "t1", "r2")
	rec := &recorder{}
	b.start(t, ConsumerConfig{AckWait: 2 * time.Second, MaxDeliver: 5, MaxAckPending: 500}, rec.handle)
	testenv.Eventually(t, 5*time.Second, acked(t, b, seq2), "second message acked by the new instance")

	info := b.consumerInfo(t, DefaultDurable)
	if !info.Created.Equal(created) {
		t.Fatalf("consumer re-created: created %v, was %v", info.Created, created)
	}
	if info.Config.AckWait != 2*time.Second || info.Config.MaxDeliver != 5 || info.Config.MaxAckPending != 500 ||
		info.Config.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Fatalf("updated config = %+v", info.Config)
	}
	if got := rec.deliveries(); len(got) != 1 || got[0].StreamSeq != seq2 {
		t.Fatalf("second instance handled %+v, want only seq %d", got, seq2)
	}
}

func TestConsumerAckConfirms(t *testing.T) {
	b := newBus(t)
	rec := &recorder{}
	b.start(t, ConsumerConfig{AckWait: time.Second}, rec.handle)
	seq := b.request(t, "t1", "r1")
	testenv.Eventually(t, 5*time.Second, acked(t, b, seq), "acked")
	// Well past the ack wait, the message has not come back.
	consistently(t, 1500*time.Millisecond, func() bool { return rec.count() == 1 }, "acked message redelivered")
	if info := b.consumerInfo(t, DefaultDurable); info.NumRedelivered != 0 {
		t.Fatalf("redelivered: %+v", info)
	}
}

func TestConsumerTermStopsRedeliveryWithReason(t *testing.T) {
	b := newBus(t)
	advisories, err := b.nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + DefaultStreamName + "." + DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{decide: func(context.Context, handlers.Delivery) handlers.Disposition {
		return handlers.Disposition{Action: handlers.Term}
	}}
	b.start(t, ConsumerConfig{AckWait: time.Second}, rec.handle)
	seq := b.request(t, "t1", "bad")

	adv, err := advisories.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no termination advisory: %v", err)
	}
	var a struct {
		StreamSeq uint64 `json:"stream_seq"`
		Reason    string `json:"reason"`
	}
	if err := json.Unmarshal(adv.Data, &a); err != nil {
		t.Fatal(err)
	}
	f, err := Features(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	want := termReasonHandler
	if !f.TermReason {
		want = "" // nats-server 2.9: plain +TERM, the advisory has no reason
	}
	if a.StreamSeq != seq || a.Reason != want {
		t.Fatalf("advisory = %s (nats-server %s)", adv.Data, f.Version)
	}
	testenv.Eventually(t, 5*time.Second, acked(t, b, seq), "terminated message settled")
	consistently(t, 1500*time.Millisecond, func() bool { return rec.count() == 1 }, "terminated message redelivered")
}

func TestConsumerNakWithDelay(t *testing.T) {
	b := newBus(t)
	const delay = 700 * time.Millisecond
	var nakedAt atomic.Int64
	rec := &recorder{decide: func(_ context.Context, d handlers.Delivery) handlers.Disposition {
		if d.NumDelivered == 1 {
			nakedAt.Store(time.Now().UnixNano())
			return handlers.Disposition{Action: handlers.Nak, Delay: delay}
		}
		return handlers.Disposition{Action: handlers.Ack}
	}}
	b.start(t, ConsumerConfig{AckWait: 10 * time.Second}, rec.handle)
	seq := b.request(t, "t1", "later")
	testenv.Eventually(t, 8*time.Second, acked(t, b, seq), "acked on second delivery")

	got := rec.deliveries()
	if len(got) != 2 || got[1].NumDelivered != 2 {
		t.Fatalf("deliveries = %+v", got)
	}
	gap := got[1].at.Sub(time.Unix(0, nakedAt.Load()))
	// Redelivered after the delay, and long before the ack wait would have done it.
	if gap < delay-50*time.Millisecond || gap > 5*time.Second {
		t.Fatalf("redelivered %s after the nak, want about %s", gap, delay)
	}
}

func TestConsumerLeaveRedeliversAfterAckWait(t *testing.T) {
	b := newBus(t)
	const ackWait = time.Second
	rec := &recorder{decide: func(_ context.Context, d handlers.Delivery) handlers.Disposition {
		if d.NumDelivered == 1 {
			return handlers.Disposition{Action: handlers.Leave}
		}
		return handlers.Disposition{Action: handlers.Ack}
	}}
	b.start(t, ConsumerConfig{AckWait: ackWait}, rec.handle)
	seq := b.request(t, "t1", "left")
	testenv.Eventually(t, 8*time.Second, acked(t, b, seq), "acked on second delivery")

	got := rec.deliveries()
	if len(got) != 2 || got[1].NumDelivered != 2 {
		t.Fatalf("deliveries = %+v", got)
	}
	if gap := got[1].at.Sub(got[0].at); gap < ackWait-100*time.Millisecond {
		t.Fatalf("redelivered after %s, before the ack wait %s", gap, ackWait)
	}
}

func TestConsumerKeepsLongHandlerAliveWithInProgress(t *testing.T) {
	b := newBus(t)
	// Heartbeats every 500 ms leave a second of slack for a loaded test machine.
	const ackWait = 1500 * time.Millisecond
	rec := &recorder{decide: func(ctx context.Context, _ handlers.Delivery) handlers.Disposition {
		select { // a sync that outlives the ack wait three times over
		case <-time.After(3*ackWait + 300*time.Millisecond):
			return handlers.Disposition{Action: handlers.Ack}
		case <-ctx.Done():
			return handlers.Disposition{Action: handlers.Leave}
		}
	}}
	b.start(t, ConsumerConfig{AckWait: ackWait}, rec.handle)
	seq := b.request(t, "t1", "long")
	testenv.Eventually(t, 15*time.Second, acked(t, b, seq), "long message acked")

	if got := rec.deliveries(); len(got) != 1 {
		t.Fatalf("long message delivered %d times: %+v", len(got), got)
	}
	if info := b.consumerInfo(t, DefaultDurable); info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Fatalf("consumer info = %+v", info)
	}
}

func TestConsumerFetchesOnlyForFreeWorkers(t *testing.T) {
	b := newBus(t)
	release := make(chan struct{})
	var running, peak atomic.Int64
	rec := &recorder{decide: func(ctx context.Context, _ handlers.Delivery) handlers.Disposition {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
			return handlers.Disposition{Action: handlers.Ack}
		case <-ctx.Done():
			return handlers.Disposition{Action: handlers.Leave}
		}
	}}
	c := b.start(t, ConsumerConfig{AckWait: 2 * time.Second, MaxWorkers: 2, FetchWait: 100 * time.Millisecond}, rec.handle)
	var last uint64
	for i := range 5 {
		last = b.request(t, "t1", "r"+string(rune('a'+i)))
	}

	testenv.Eventually(t, 5*time.Second, func() bool { return running.Load() == 2 }, "two handlers running")
	// Over several fetch waits, the other three stay on the server, undelivered.
	consistently(t, 700*time.Millisecond, func() bool {
		info := b.consumerInfo(t, DefaultDurable)
		return info.NumAckPending <= 2 && info.NumPending >= 3 && c.InFlight() <= 2 && running.Load() <= 2
	}, "more messages fetched than free workers")

	close(release)
	testenv.Eventually(t, 10*time.Second, acked(t, b, last), "all five acked")
	if rec.count() != 5 || peak.Load() != 2 {
		t.Fatalf("handled %d, peak concurrency %d", rec.count(), peak.Load())
	}
}

func TestConsumerShutdownReturnsPromptlyAndMessagesAreRedelivered(t *testing.T) {
	b := newBus(t)
	cfg := ConsumerConfig{AckWait: time.Second}
	first := b.start(t, cfg, func(ctx context.Context, _ handlers.Delivery) handlers.Disposition {
		<-ctx.Done() // a long sync, interrupted by the shutdown
		return handlers.Disposition{Action: handlers.Leave}
	})
	seq1 := b.request(t, "t1", "a")
	seq2 := b.request(t, "t2", "b")
	testenv.Eventually(t, 5*time.Second, func() bool { return first.InFlight() == 2 }, "both handlers running")

	if took := first.stop(t); took > 2*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	if first.Bound() || first.InFlight() != 0 {
		t.Fatalf("after shutdown: bound %v, in flight %d", first.Bound(), first.InFlight())
	}

	rec := &recorder{}
	b.start(t, cfg, rec.handle)
	testenv.Eventually(t, 8*time.Second, acked(t, b, max(seq1, seq2)), "second instance acked both")
	got := rec.deliveries()
	if len(got) != 2 || got[0].NumDelivered != 2 || got[1].NumDelivered != 2 {
		t.Fatalf("second instance deliveries = %+v", got)
	}
}

func TestConsumerShutdownGraceBoundsAStuckHandler(t *testing.T) {
	b := newBus(t)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	cfg := ConsumerConfig{AckWait: time.Second, ShutdownGrace: 300 * time.Millisecond}
	first := b.start(t, cfg, func(context.Context, handlers.Delivery) handlers.Disposition {
		<-stuck // ignores its context
		return handlers.Disposition{Action: handlers.Ack}
	})
	seq := b.request(t, "t1", "stuck")
	testenv.Eventually(t, 5*time.Second, func() bool { return first.InFlight() == 1 }, "handler running")

	if took := first.stop(t); took < 250*time.Millisecond || took > 2*time.Second {
		t.Fatalf("shutdown took %s, want about the grace period", took)
	}
	// Heartbeats stopped with the shutdown: the message falls back to the server although the
	// stuck handler still runs.
	rec := &recorder{}
	b.start(t, cfg, rec.handle)
	testenv.Eventually(t, 8*time.Second, acked(t, b, seq), "redelivered and acked by the second instance")
	if got := rec.deliveries(); len(got) != 1 || got[0].NumDelivered != 2 {
		t.Fatalf("second instance deliveries = %+v", got)
	}
}

func TestConsumerTerminatesOnHandlerPanic(t *testing.T) {
	b := newBus(t)
	rec := &recorder{decide: func(context.Context, handlers.Delivery) handlers.Disposition { panic("bug") }}
	b.start(t, ConsumerConfig{AckWait: time.Second}, rec.handle)
	seq := b.request(t, "t1", "boom")
	testenv.Eventually(t, 5*time.Second, acked(t, b, seq), "panicking message terminated")
	consistently(t, 1500*time.Millisecond, func() bool { return rec.count() == 1 }, "panicking message redelivered")
}

func TestConsumerRunFailsWithoutStream(t *testing.T) {
	s := testenv.NATS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(js, ConsumerConfig{}, (&recorder{}).handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Run(ctx); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Run = %v, want ErrStreamNotFound", err)
	}
	if c.Bound() {
		t.Fatal("bound without a stream")
	}
}

func TestNewConsumerRejectsBadConfig(t *testing.T) {
	b := newBus(t)
	h := (&recorder{}).handle
	if _, err := NewConsumer(b.js, ConsumerConfig{}, h); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	for name, cfg := range map[string]ConsumerConfig{
		"tiny ack wait":                {AckWait: 100 * time.Millisecond},
		"negative workers":             {MaxWorkers: -1},
		"negative active":              {MaxActive: -1},
		"ack pending below workers":    {MaxWorkers: 10, MaxAckPending: 5},
		"tiny fetch wait":              {FetchWait: time.Millisecond},
		"max deliver below unlimited":  {MaxDeliver: -2},
		"negative shutdown grace time": {ShutdownGrace: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewConsumer(b.js, cfg, h); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestConsumerRebindsAfterConsumerDeleted(t *testing.T) {
	b := newBus(t)
	rec := &recorder{}
	b.start(t, ConsumerConfig{}, rec.handle)
	if err := b.js.DeleteConsumer(context.Background(), DefaultStreamName, DefaultDurable); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := b.js.Consumer(context.Background(), DefaultStreamName, DefaultDurable)
		return err == nil
	}, "consumer re-created")
	seq := b.request(t, "t1", "after-delete")
	testenv.Eventually(t, 10*time.Second, acked(t, b, seq), "handled by the re-created consumer")
	if got := rec.deliveries(); len(got) != 1 || got[0].StreamSeq != seq {
		t.Fatalf("deliveries = %+v", got)
	}
}

func TestConsumerNotBoundWhenConnectionClosed(t *testing.T) {
	b := newBus(t)
	c := b.start(t, ConsumerConfig{}, (&recorder{}).handle)
	if !c.Bound() {
		t.Fatal("not bound after start")
	}
	b.nc.Close()
	if c.Bound() {
		t.Fatal("bound with a closed connection")
	}
}

// beatCounter is a message that counts its InProgress calls.
type beatCounter struct {
	jetstream.Msg
	n atomic.Int64
}

func (m *beatCounter) InProgress() error { m.n.Add(1); return nil }
func (m *beatCounter) Subject() string   { return "pathling.sync.requested.t" }

// One goroutine beats for every registered message, each at least every 1.5 intervals, and
// never for a message after its stop.
func TestHeartbeatsShared(t *testing.T) {
	h := newHeartbeats(20*time.Millisecond, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a, b := &beatCounter{}, &beatCounter{}
	ha, hb := h.start(a), h.start(b)
	testenv.Eventually(t, 5*time.Second, func() bool { return a.n.Load() >= 3 && b.n.Load() >= 3 }, "both beat")
	h.stop(ha)
	h.mu.Lock()
	_, aLeft := h.due[ha]
	_, bLeft := h.due[hb]
	h.mu.Unlock()
	if aLeft || !bLeft || !ha.stopped {
		t.Fatalf("after stop: a registered %v (stopped %v), b registered %v", aLeft, ha.stopped, bLeft)
	}
	n := a.n.Load()
	m := b.n.Load()
	testenv.Eventually(t, 5*time.Second, func() bool { return b.n.Load() >= m+3 }, "b beats on")
	if a.n.Load() != n {
		t.Errorf("a beat %d times after its stop", a.n.Load()-n)
	}
}

// A handler that parks its delivery returns at once; the message keeps its
// heartbeats and its worker slot until the handler settles it, from another
// goroutine, past several ack waits; a second Settle is ignored; a
// shutdown waits for parked deliveries as for running handlers.
func TestConsumerParkedDeliverySettlesLater(t *testing.T) {
	b := newBus(t)
	const ackWait = 1500 * time.Millisecond
	type parked struct {
		ctx    context.Context
		settle func(handlers.Disposition)
	}
	settles := make(chan parked, 2)
	var returned atomic.Int64
	rec := &recorder{decide: func(ctx context.Context, d handlers.Delivery) handlers.Disposition {
		if d.Settle == nil {
			t.Error("the consumer gave no Settle")
			return handlers.Disposition{Action: handlers.Ack}
		}
		settles <- parked{ctx, d.Settle}
		returned.Add(1)
		return handlers.Disposition{Action: handlers.Parked}
	}}
	c := b.start(t, ConsumerConfig{AckWait: ackWait, MaxWorkers: 1, FetchWait: 100 * time.Millisecond}, rec.handle)
	seq := b.request(t, "t1", "parked")
	b.request(t, "t1", "next")
	settle := (<-settles).settle
	testenv.Eventually(t, 5*time.Second, func() bool { return returned.Load() == 1 }, "handler returned")
	// Parked past the ack wait twice over: heartbeats keep it, the slot stays taken.
	consistently(t, 2*ackWait+300*time.Millisecond, func() bool {
		info := b.consumerInfo(t, DefaultDurable)
		return c.InFlight() == 1 && info.NumRedelivered == 0 && info.NumAckPending == 1 && rec.count() == 1
	}, "a parked delivery lost its slot or was redelivered")

	settle(handlers.Disposition{Action: handlers.Ack})
	settle(handlers.Disposition{Action: handlers.Nak}) // ignored
	testenv.Eventually(t, 5*time.Second, func() bool { return b.consumerInfo(t, DefaultDurable).AckFloor.Stream >= seq },
		"parked message acked after Settle")
	next := <-settles // the freed slot takes the next message
	if rec.count() != 2 {
		t.Fatalf("%d deliveries, want 2", rec.count())
	}
	go func() {
		// Settled only once the shutdown began: stop waits for it.
		<-next.ctx.Done()
		next.settle(handlers.Disposition{Action: handlers.Nak})
	}()
	c.stop(t)
	if c.InFlight() != 0 {
		t.Fatalf("after shutdown: %d in flight", c.InFlight())
	}
	if info := b.consumerInfo(t, DefaultDurable); info.NumRedelivered != 0 {
		t.Fatalf("consumer info = %+v", info)
	}
}

// MaxActive bounds the handlers running at once, parked ones aside: with
// two running, a third message waits on the server although a worker is
// free; once one parks, it is fetched.
func TestConsumerMaxActiveCountsRunningHandlersOnly(t *testing.T) {
	b := newBus(t)
	park := make(chan struct{})
	var running atomic.Int64
	settles := make(chan func(handlers.Disposition), 3)
	rec := &recorder{decide: func(ctx context.Context, d handlers.Delivery) handlers.Disposition {
		running.Add(1)
		defer running.Add(-1)
		select {
		case <-park:
			settles <- d.Settle
			return handlers.Disposition{Action: handlers.Parked}
		case <-ctx.Done():
			return handlers.Disposition{Action: handlers.Leave}
		}
	}}
	c := b.start(t, ConsumerConfig{AckWait: 2 * time.Second, MaxWorkers: 4, MaxActive: 2, FetchWait: 100 * time.Millisecond}, rec.handle)
	for i := range 3 {
		b.request(t, "t1", "r"+string(rune('a'+i)))
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return running.Load() == 2 }, "two handlers running")
	consistently(t, 500*time.Millisecond, func() bool { return rec.count() == 2 && c.InFlight() == 2 }, "a third handler started beyond MaxActive")

	park <- struct{}{} // one parks: its slot is free for the third
	testenv.Eventually(t, 5*time.Second, func() bool { return rec.count() == 3 }, "third message fetched after a handler parked")
	if n := c.InFlight(); n != 3 {
		t.Fatalf("%d in flight, want 3 (the parked one still counts)", n)
	}
	close(park)
	for range 3 {
		(<-settles)(handlers.Disposition{Action: handlers.Ack})
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return c.InFlight() == 0 }, "all settled")
}

// Handlers run on at most MaxActive long-lived workers, which exit once the
// consumer has been idle for a while: a burst leaves no goroutines behind.
func TestConsumerWorkersAreBoundedAndExitWhenIdle(t *testing.T) {
	b := newBus(t)
	const msgs, maxActive = 40, 3
	rec := &recorder{decide: func(context.Context, handlers.Delivery) handlers.Disposition {
		time.Sleep(5 * time.Millisecond)
		return handlers.Disposition{Action: handlers.Ack}
	}}
	c := b.start(t, ConsumerConfig{MaxWorkers: 8, MaxActive: maxActive, FetchWait: 100 * time.Millisecond}, rec.handle)
	for i := range msgs {
		b.request(t, "t1", fmt.Sprintf("r%d", i))
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		if n := c.workers.Live(); n > maxActive {
			t.Fatalf("%d workers, want at most MaxActive %d", n, maxActive)
		}
		return rec.count() == msgs && c.InFlight() == 0
	}, "all %d handled and settled", msgs)
	testenv.Eventually(t, 10*workerIdle, func() bool { return c.workers.Live() == 0 }, "the idle workers exited")
}
