// Package streamhistory reads the event history JetStream keeps in the
// service's stream: a bounded scan of a range, a follow of new events, the
// last outcome of a target, the requests a replay would re-publish, and the
// outcome of one request. It is where the operator commands (events, status,
// replay, request --wait) read the stream; they keep flags and display.
//
// Consumers are ephemeral and, on nats-server 2.9 (one filter subject per
// consumer), take one wider filter and drop on the client what was not asked
// for (natsbus.Filter), so events always come in stream order.
package streamhistory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/messages"
)

// ErrNoStream is wrapped when the stream does not exist: a configuration
// problem (a wrong name, or the service never ran against this NATS).
var ErrNoStream = errors.New("stream does not exist")

// UnavailableError is NATS failing a read: unreachable, timing out,
// refusing. Op says what was being done ("read stream PATHLING_SYNC").
type UnavailableError struct {
	Op  string
	Err error
}

func (e *UnavailableError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

func unavailable(op string, err error) error { return &UnavailableError{Op: op, Err: err} }

// History reads one stream. It holds no connection state of its own: each
// call looks the stream up, so it sees the stream as it is then.
type History struct {
	js       jetstream.JetStream
	stream   string
	subjects messages.Subjects
	timeout  time.Duration
}

// Option configures a History.
type Option func(*History)

// WithSubjects sets the subject layout (default messages.DefaultSubjectPrefix).
func WithSubjects(s messages.Subjects) Option { return func(h *History) { h.subjects = s } }

// WithRequestTimeout bounds each request to NATS that is not a wait
// (stream lookup, consumer creation, one fetch; default 10 s).
func WithRequestTimeout(d time.Duration) Option {
	return func(h *History) {
		if d > 0 {
			h.timeout = d
		}
	}
}

// New returns a History of stream reached through js. It does no I/O.
func New(js jetstream.JetStream, stream string, opts ...Option) *History {
	h := &History{js: js, stream: stream, timeout: 10 * time.Second}
	for _, opt := range opts {
		opt(h)
	}
	return h
}

// Subjects is the subject layout the History reads.
func (h *History) Subjects() messages.Subjects { return h.subjects }

// Event is one message as read from the stream.
type Event struct {
	Stream  string
	Seq     uint64
	Stored  time.Time // when the stream stored it
	Subject string
	Header  nats.Header
	Data    []byte
}

// EventOf decodes a message a JetStream consumer delivered.
func EventOf(m jetstream.Msg) (Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return Event{}, fmt.Errorf("stream message metadata: %w", err)
	}
	return Event{Stream: md.Stream, Seq: md.Sequence.Stream, Stored: md.Timestamp, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}, nil
}

func eventOfRaw(stream string, m *jetstream.RawStreamMsg) Event {
	return Event{Stream: stream, Seq: m.Sequence, Stored: m.Time, Subject: m.Subject, Header: m.Header, Data: m.Data}
}

// Envelope is the event's CloudEvents envelope (zero fields where absent).
func (ev Event) Envelope() messages.Envelope {
	env, _ := messages.ReadEnvelope(ev.Header)
	return env
}

// Time is the event's ce-time, else when the stream stored it, in UTC.
func (ev Event) Time() time.Time {
	if t := ev.Envelope().Time; !t.IsZero() {
		return t.UTC()
	}
	return ev.Stored.UTC()
}

// IDs returns the event's own id and the id of the request it is about, for
// an event of kind (messages.KindRequested, …; "" for unknown).
func (ev Event) IDs(kind string) (id, requestID string) {
	id = messages.RequestID(ev.Header, ev.Stream, ev.Seq)
	switch kind {
	case messages.KindRequested:
		return id, id
	case messages.KindCompleted, messages.KindFailed:
		var b struct {
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(ev.Data, &b) == nil && b.RequestID != "" {
			return id, b.RequestID
		}
		r, _ := strings.CutSuffix(id, "/"+kind)
		return id, r
	}
	return id, ""
}

// Range bounds a scan of the stream. Zero fields do not bound.
type Range struct {
	FromSeq uint64    // first sequence
	ToSeq   uint64    // last sequence, inclusive
	Since   time.Time // first stored at or after (ignored when FromSeq is set)
	Until   time.Time // last stored at or before
}

// open looks the stream up. Errors wrap ErrNoStream or are *UnavailableError.
func (h *History) open(ctx context.Context) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	s, err := h.js.Stream(ctx, h.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w on this NATS: %s", ErrNoStream, h.stream)
	}
	if err != nil {
		return nil, unavailable("stream "+h.stream, err)
	}
	return s, nil
}

// filter is how a consumer on the connected server selects filters: exactly
// from nats-server 2.10; before, with one wider filter, whose extra
// messages the reader drops (natsbus.Filter.Matches).
func (h *History) filter(filters []string) (natsbus.Filter, error) {
	f, err := natsbus.Features(h.js.Conn())
	if err != nil {
		return natsbus.Filter{}, err
	}
	return f.Filter(filters...), nil
}

// LastSeq is the stream's last sequence now (0 when empty). Errors wrap
// ErrNoStream or are *UnavailableError.
func (h *History) LastSeq(ctx context.Context) (uint64, error) {
	s, err := h.open(ctx)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.LastSeq, nil
}

// scanBatch is how many messages one fetch of a scan asks for.
const scanBatch = 256

// Scan calls fn with each message matching filters (subjects; none: all)
// within r, in stream order. It ends at r's end, and never after the
// stream's last message when the scan began: it never waits for new
// messages. fn's error stops the scan and is returned as it is; so is ctx's.
// Other errors wrap ErrNoStream or are *UnavailableError.
func (h *History) Scan(ctx context.Context, filters []string, r Range, fn func(Event) error) error {
	s, err := h.open(ctx)
	if err != nil {
		return err
	}
	op := "read stream " + h.stream
	last := s.CachedInfo().State.LastSeq
	end := r.ToSeq
	if end == 0 || end > last {
		end = last
	}
	if end == 0 || r.FromSeq > end {
		return nil
	}
	flt, err := h.filter(filters)
	if err != nil {
		return unavailable(op, err)
	}
	cc := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, // gone soon even if this process dies mid-scan
		MemoryStorage:     true,
		Replicas:          1,
	}
	switch {
	case r.FromSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.FromSeq
	case !r.Since.IsZero():
		since := r.Since
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	flt.Apply(&cc)
	cctx, cancel := context.WithTimeout(ctx, h.timeout)
	cons, err := s.CreateConsumer(cctx, cc)
	cancel()
	if err != nil {
		return unavailable(op, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(pending, scanBatch)), jetstream.FetchMaxWait(h.timeout))
		if err != nil {
			return unavailable(op, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			ev, err := EventOf(m)
			if err != nil {
				return err
			}
			if ev.Seq > end || (!r.Until.IsZero() && ev.Stored.After(r.Until)) {
				return nil
			}
			if flt.Matches(ev.Subject) {
				if err := fn(ev); err != nil {
					return err
				}
			}
			if ev.Seq == end {
				return nil
			}
			md, _ := m.Metadata()
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return unavailable(op, err)
		}
		if got == 0 {
			return unavailable(op, fmt.Errorf("no messages delivered although %d are pending", pending))
		}
	}
	return nil
}

// Follow calls fn with each message matching filters, from since (zero:
// only new messages) on, until ctx ends; then it returns nil. fn's error
// stops it and is returned as it is; other errors wrap ErrNoStream or are
// *UnavailableError.
func (h *History) Follow(ctx context.Context, filters []string, since time.Time, fn func(Event) error) error {
	s, err := h.open(ctx)
	if err != nil {
		return err
	}
	op := "follow stream " + h.stream
	flt, err := h.filter(filters)
	if err != nil {
		return unavailable(op, err)
	}
	oc := jetstream.OrderedConsumerConfig{FilterSubjects: flt.Subjects, DeliverPolicy: jetstream.DeliverNewPolicy}
	if !since.IsZero() {
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.OrderedConsumer(ctx, oc)
	if err != nil {
		return unavailable(op, err)
	}
	events := make(chan Event, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if !flt.Matches(m.Subject()) {
			return
		}
		ev, err := EventOf(m)
		if err != nil {
			return
		}
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return unavailable(op, err)
	}
	defer cc.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}

// Targets are the targets the stream holds events of, in no order. Errors
// wrap ErrNoStream or are *UnavailableError.
func (h *History) Targets(ctx context.Context) ([]string, error) {
	s, err := h.open(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(h.subjects.All()))
	if err != nil {
		return nil, unavailable("stream info", err)
	}
	seen := map[string]bool{}
	var out []string
	for subj := range info.State.Subjects {
		if _, t, ok := h.subjects.TargetOf(subj); ok && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// LastOutcome is the later of target's last SyncCompleted and last
// SyncFailed in the stream; ok is false when it has neither. Errors wrap
// ErrNoStream or are *UnavailableError.
func (h *History) LastOutcome(ctx context.Context, target string) (ev Event, ok bool, err error) {
	s, err := h.open(ctx)
	if err != nil {
		return Event{}, false, err
	}
	var latest *jetstream.RawStreamMsg
	for _, subj := range []string{h.subjects.Completed(target), h.subjects.Failed(target)} {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return Event{}, false, unavailable("last event on "+subj, err)
		}
		if latest == nil || m.Sequence > latest.Sequence {
			latest = m
		}
	}
	if latest == nil {
		return Event{}, false, nil
	}
	return eventOfRaw(s.CachedInfo().Config.Name, latest), true, nil
}

// OutcomeWatch delivers the outcome of one request (see WatchOutcome).
type OutcomeWatch struct {
	c  chan Event
	cc jetstream.ConsumeContext
}

// Outcome delivers the request's SyncCompleted or SyncFailed, once.
func (w *OutcomeWatch) Outcome() <-chan Event { return w.c }

// Stop stops watching.
func (w *OutcomeWatch) Stop() { w.cc.Stop() }

// WatchOutcome watches target's outcomes from now on for the one of
// requestID (ce-id <id>/completed or <id>/failed). Start it before
// publishing the request, so that even a fast outcome is seen; Stop it when
// done. It does not look the stream up first: any error, a missing stream
// included, is an *UnavailableError.
func (h *History) WatchOutcome(ctx context.Context, target, requestID string) (*OutcomeWatch, error) {
	op := "follow outcomes on stream " + h.stream
	flt, err := h.filter([]string{h.subjects.Completed(target), h.subjects.Failed(target)})
	if err != nil {
		return nil, unavailable(op, err)
	}
	cons, err := h.js.OrderedConsumer(ctx, h.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: flt.Subjects,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, unavailable(op, err)
	}
	w := &OutcomeWatch{c: make(chan Event, 1)}
	completed, failed := messages.CompletedID(requestID), messages.FailedID(requestID)
	w.cc, err = cons.Consume(func(m jetstream.Msg) {
		if !flt.Matches(m.Subject()) {
			return
		}
		if id := m.Headers().Get(messages.HeaderID); id != completed && id != failed {
			return
		}
		ev, err := EventOf(m)
		if err != nil {
			return
		}
		select {
		case w.c <- ev:
		default: // already delivered: a duplicate outcome says nothing new
		}
	})
	if err != nil {
		return nil, unavailable("follow outcomes", err)
	}
	return w, nil
}
