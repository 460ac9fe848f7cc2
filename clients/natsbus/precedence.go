package natsbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Precedence answers, from the stream and its consumer, whether a request
// delivered now may have an earlier request on the same subject that is not
// yet settled: delivered to this replica or another and not yet acknowledged,
// or not delivered yet. It implements handlers.Precedence.
//
// The consumer's ack floor says every message up to it is acknowledged (or
// terminated); the stream's first message on the subject after the floor is
// then the earliest one that may be unsettled. When that is the request
// itself, there is none before it. A floor read a while ago is lower than
// today's, so a stale floor can only answer "maybe" where the answer is "no",
// never the reverse: the floor is read at most once per MaxAge, and readers
// meanwhile take the last one read.
type Precedence struct {
	js              jetstream.JetStream
	stream, durable string
	maxAge          time.Duration
	now             func() time.Time

	mu         sync.Mutex
	st         jetstream.Stream
	cons       jetstream.Consumer
	floor      uint64
	readAt     time.Time
	refreshing bool
	// unsettled holds, per subject, the last message found before a
	// request: while the floor is below it, a later request on the subject
	// has it before itself too, without asking the stream again (a flood
	// of requests for one target asks once, not once a request).
	unsettled map[string]uint64
	lookups   atomic.Int32 // stream look-ups in flight
}

// maxUnsettled bounds Precedence.unsettled: past it, it starts afresh.
const maxUnsettled = 1 << 16

// maxLookups bounds the stream look-ups in flight. A burst of queued
// requests (hundreds delivered at once) would otherwise send as many
// requests to the JetStream API at once, queue behind each other there, and
// each wait longer than settling would have taken: past the bound a request
// settles at once, as it did before this check existed.
const maxLookups = 4

// DefaultFloorMaxAge is how long Precedence uses an ack floor it read.
const DefaultFloorMaxAge = 50 * time.Millisecond

// NewPrecedence returns a Precedence for the durable consumer of stream. It
// does not talk to the server: the stream and consumer are looked up at the
// first question. maxAge ≤ 0 means DefaultFloorMaxAge.
func NewPrecedence(js jetstream.JetStream, stream, durable string, maxAge time.Duration) *Precedence {
	if maxAge <= 0 {
		maxAge = DefaultFloorMaxAge
	}
	return &Precedence{js: js, stream: stream, durable: durable, maxAge: maxAge, now: time.Now}
}

// EarlierUnsettled reports whether the stream holds a message on subject
// before sequence seq that the consumer may not have settled yet. On any
// error the answer is true, with the error: the caller then keeps its
// requests in order the slower way.
func (p *Precedence) EarlierUnsettled(ctx context.Context, subject string, seq uint64) (bool, error) {
	st, floor, err := p.state(ctx)
	if err != nil {
		return true, err
	}
	if seq <= floor+1 {
		return false, nil // nothing between the floor and the request
	}
	if p.knownBefore(subject, seq, floor) {
		return true, nil
	}
	if p.lookups.Add(1) > maxLookups {
		p.lookups.Add(-1)
		return true, nil // busy: "maybe", and the request settles
	}
	m, err := st.GetMsg(ctx, floor+1, jetstream.WithGetMsgSubject(subject))
	p.lookups.Add(-1)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// No message on the subject from the floor on, not even the request
		// (removed by the stream's limits since): none before it either.
		return false, nil
	case err != nil:
		return true, fmt.Errorf("natsbus: first message on %s after %d: %w", subject, floor, err)
	case m.Subject != subject:
		// A server that ignores the subject in the request returns the message
		// at the sequence asked: it says nothing about the subject.
		return true, fmt.Errorf("natsbus: the server answered with a message on %s for %s", m.Subject, subject)
	}
	if m.Sequence >= seq {
		return false, nil
	}
	p.mu.Lock()
	if p.unsettled == nil || len(p.unsettled) >= maxUnsettled {
		p.unsettled = map[string]uint64{}
	}
	p.unsettled[subject] = max(p.unsettled[subject], m.Sequence)
	p.mu.Unlock()
	return true, nil
}

// knownBefore reports whether a message on subject found before an earlier
// request is still above the floor and before seq; it forgets one the floor
// has passed.
func (p *Precedence) knownBefore(subject string, seq, floor uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, ok := p.unsettled[subject]
	switch {
	case !ok:
		return false
	case last <= floor:
		delete(p.unsettled, subject)
		return false
	}
	return last < seq
}

// state returns the stream and the consumer's ack floor, reading the floor
// again when it is older than maxAge and no one else is reading it.
func (p *Precedence) state(ctx context.Context) (jetstream.Stream, uint64, error) {
	p.mu.Lock()
	st, cons, floor := p.st, p.cons, p.floor
	fresh := !p.readAt.IsZero() && p.now().Sub(p.readAt) < p.maxAge
	if fresh || p.refreshing {
		p.mu.Unlock()
		if st == nil {
			return nil, 0, errors.New("natsbus: stream and consumer not looked up yet")
		}
		return st, floor, nil
	}
	p.refreshing = true
	p.mu.Unlock()

	at := p.now()
	info, st, cons, err := p.read(ctx, st, cons)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshing = false
	if err != nil {
		// Look the consumer up again next time (it may have been
		// recreated), and not before maxAge: meanwhile the floor read
		// last still holds.
		p.cons, p.readAt = nil, at
		if p.st == nil {
			return nil, 0, err
		}
		return p.st, p.floor, nil
	}
	p.st, p.cons, p.readAt = st, cons, at
	p.floor = max(p.floor, info.AckFloor.Stream)
	return st, p.floor, nil
}

func (p *Precedence) read(ctx context.Context, st jetstream.Stream, cons jetstream.Consumer) (*jetstream.ConsumerInfo, jetstream.Stream, jetstream.Consumer, error) {
	var err error
	if st == nil {
		if st, err = p.js.Stream(ctx, p.stream); err != nil {
			return nil, nil, nil, fmt.Errorf("natsbus: look up stream %s: %w", p.stream, err)
		}
	}
	if cons == nil {
		if cons, err = p.js.Consumer(ctx, p.stream, p.durable); err != nil {
			return nil, nil, nil, fmt.Errorf("natsbus: look up consumer %s/%s: %w", p.stream, p.durable, err)
		}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("natsbus: ack floor of consumer %s/%s: %w", p.stream, p.durable, err)
	}
	return info, st, cons, nil
}
