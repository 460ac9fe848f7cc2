package natsbus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// The first message on a subject after the consumer's ack floor is the
// earliest that may be unsettled: a request has an earlier one exactly when
// that message comes before it.
func TestPrecedenceSeesEarlierUnsettledRequestsOfTheSameSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := newBus(t)
	cons := b.precedenceConsumer(t)
	a1 := b.request(t, "a", "a1")
	b1 := b.request(t, "b", "b1")
	a2 := b.request(t, "a", "a2")

	now := time.Unix(1000, 0)
	p := NewPrecedence(b.js, DefaultStreamName, "prec", time.Second)
	p.now = func() time.Time { return now }
	ask := func(subject string, seq uint64, want bool) {
		t.Helper()
		got, err := p.EarlierUnsettled(ctx, subject, seq)
		if err != nil {
			t.Fatalf("EarlierUnsettled(%s, %d): %v", subject, seq, err)
		}
		if got != want {
			t.Fatalf("EarlierUnsettled(%s, %d) = %v, want %v", subject, seq, got, want)
		}
	}
	subjA, subjB := messages.Subjects{}.Requested("a"), messages.Subjects{}.Requested("b")

	// Nothing delivered yet: a1 and b1 are the first of their subjects, a2 has a1 before it.
	ask(subjA, a1, false)
	ask(subjB, b1, false)
	ask(subjA, a2, true)

	// Delivered, a1 not yet acknowledged: still before a2.
	msgs, err := cons.FetchNoWait(3)
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range msgs.Messages() {
		got = append(got, m)
	}
	if len(got) != 3 {
		t.Fatalf("fetched %d messages, want 3", len(got))
	}
	now = now.Add(2 * time.Second)
	ask(subjA, a2, true)

	// a1 acknowledged: the floor passes it (b1, unacknowledged, is on another subject).
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	// The floor read a moment ago still holds until it is older than maxAge.
	ask(subjA, a2, true)
	now = now.Add(2 * time.Second)
	ask(subjA, a2, false)
	ask(subjB, b1, false)
}

// Without its consumer the answer is "maybe", with the error.
func TestPrecedenceWithoutConsumerAnswersMaybe(t *testing.T) {
	b := newBus(t)
	seq := b.request(t, "a", "a1")
	p := NewPrecedence(b.js, DefaultStreamName, "no-such-consumer", 0)
	earlier, err := p.EarlierUnsettled(context.Background(), messages.Subjects{}.Requested("a"), seq)
	if err == nil || !earlier {
		t.Fatalf("EarlierUnsettled = %v, %v; want true and an error", earlier, err)
	}
}

// countingStream counts the stream's GetMsg calls.
type countingStream struct {
	jetstream.Stream
	gets int
}

func (s *countingStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	s.gets++
	return s.Stream.GetMsg(ctx, seq, opts...)
}

// Once an unsettled message on a subject is found, later requests on it
// have it before them without asking the stream, until the floor passes it.
func TestPrecedenceAsksTheStreamOncePerUnsettledMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := newBus(t)
	cons := b.precedenceConsumer(t)
	var seqs []uint64
	for i := range 4 {
		seqs = append(seqs, b.request(t, "a", fmt.Sprint("a", i)))
	}
	now := time.Unix(1000, 0)
	p := NewPrecedence(b.js, DefaultStreamName, "prec", time.Second)
	p.now = func() time.Time { return now }
	subj := messages.Subjects{}.Requested("a")
	if _, err := p.EarlierUnsettled(ctx, subj, seqs[0]); err != nil { // reads the floor and the stream
		t.Fatal(err)
	}
	cs := &countingStream{Stream: p.st}
	p.st = cs
	for _, seq := range seqs[1:] {
		if earlier, err := p.EarlierUnsettled(ctx, subj, seq); err != nil || !earlier {
			t.Fatalf("EarlierUnsettled(%d) = %v, %v; want true", seq, earlier, err)
		}
	}
	if cs.gets != 1 {
		t.Fatalf("asked the stream %d times for 3 requests behind one unsettled message, want 1", cs.gets)
	}
	// The first one settled: the floor passes it, and the stream is asked
	// again (it answers with the second).
	msgs, err := cons.FetchNoWait(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Second)
	if earlier, err := p.EarlierUnsettled(ctx, subj, seqs[2]); err != nil || !earlier {
		t.Fatalf("EarlierUnsettled(%d) after the first settled = %v, %v; want true", seqs[2], earlier, err)
	}
	if cs.gets != 2 {
		t.Fatalf("asked the stream %d times, want 2", cs.gets)
	}
}

// gatedStream holds every GetMsg until gate is closed.
type gatedStream struct {
	jetstream.Stream
	gate    chan struct{}
	started atomic.Int32
}

func (s *gatedStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	s.started.Add(1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Stream.GetMsg(ctx, seq, opts...)
}

// With maxLookups look-ups in flight, a further question is answered
// "maybe" at once, without asking the stream.
func TestPrecedenceBoundsTheLookupsInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := newBus(t)
	b.precedenceConsumer(t)
	b.request(t, "x", "x1") // keeps the floor below the requests asked about
	var seqs []uint64
	for i := range maxLookups + 1 {
		seqs = append(seqs, b.request(t, fmt.Sprint("t", i), "r"))
	}
	p := NewPrecedence(b.js, DefaultStreamName, "prec", time.Hour)
	if _, err := p.EarlierUnsettled(ctx, "warm-up", 1); err != nil { // looks the stream and consumer up
		t.Fatal(err)
	}
	gs := &gatedStream{Stream: p.st, gate: make(chan struct{})}
	p.st = gs
	var wg sync.WaitGroup
	for i := range maxLookups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if earlier, err := p.EarlierUnsettled(ctx, messages.Subjects{}.Requested(fmt.Sprint("t", i)), seqs[i]); err != nil || earlier {
				t.Errorf("look-up %d = %v, %v; want false", i, earlier, err)
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return gs.started.Load() == maxLookups }, "%d look-ups in flight", maxLookups)
	qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
	defer qcancel()
	earlier, err := p.EarlierUnsettled(qctx, messages.Subjects{}.Requested(fmt.Sprint("t", maxLookups)), seqs[maxLookups])
	if err != nil || !earlier {
		t.Fatalf("a look-up past the bound = %v, %v; want true (maybe) at once", earlier, err)
	}
	if n := gs.started.Load(); n != maxLookups {
		t.Fatalf("%d look-ups started, want %d", n, maxLookups)
	}
	close(gs.gate)
	wg.Wait()
}

// precedenceConsumer creates the durable consumer "prec" on the requests, at
// new messages, that the tests ask Precedence about.
func (b *bus) precedenceConsumer(t testing.TB) jetstream.Consumer {
	t.Helper()
	cons, err := b.js.CreateConsumer(context.Background(), DefaultStreamName, jetstream.ConsumerConfig{
		Durable: "prec", DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: DefaultFilterSubject,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}
