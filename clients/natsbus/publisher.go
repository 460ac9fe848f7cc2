package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

var _ handlers.Publisher = (*Publisher)(nil)

// ErrInvalidEvent is returned by Publish for an event without subject or id.
var ErrInvalidEvent = errors.New("natsbus: invalid event")

// Publisher publishes events to JetStream through Watermill's NATS publisher (watermill-nats
// pkg/nats with JetStream on), waiting for the stream's ack.
//
// On the wire each message carries exactly the headers Envelope.WriteTo writes (ce-*,
// content-type, traceparent, tracestate, Nats-Msg-Id = ce-id, with these exact spellings: NATS
// headers are case-sensitive and neither Watermill nor nats.go changes them), plus Watermill's
// own _watermill_message_uuid header (also = ce-id), which our readers ignore.
type Publisher struct {
	wm      *wmnats.Publisher
	timeout time.Duration
	log     *slog.Logger
}

// PublisherOption configures a Publisher.
type PublisherOption func(*publisherOptions) error

type publisherOptions struct {
	timeout time.Duration
	logger  *slog.Logger
}

// WithPublishTimeout bounds each publish, from sending to the stream's ack (default 5 s).
func WithPublishTimeout(d time.Duration) PublisherOption {
	return func(o *publisherOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: publish timeout must be positive", ErrInvalidConfig)
		}
		o.timeout = d
		return nil
	}
}

// WithPublisherLogger sets the logger Watermill and the publisher log to (default: discarded).
func WithPublisherLogger(l *slog.Logger) PublisherOption {
	return func(o *publisherOptions) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidConfig)
		}
		o.logger = l
		return nil
	}
}

// NewPublisher returns a publisher on nc. The connection stays the caller's: the publisher never
// closes it (Watermill's Close would), so it has no Close method. Errors: ErrInvalidConfig; the
// error of creating the JetStream context.
func NewPublisher(nc *nats.Conn, opts ...PublisherOption) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidConfig)
	}
	o := publisherOptions{timeout: DefaultPublishTimeout, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	wm, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		// NATSMarshaler copies the message metadata into NATS headers one to one (nats.Header.Set
		// is case-sensitive) and adds _watermill_message_uuid.
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream: wmnats.JetStreamConfig{
			// AutoProvision stays off: EnsureStream owns the stream's configuration.
			// TrackMsgId publishes with nats.MsgId(message UUID); the UUID is ce-id, so
			// Nats-Msg-Id = ce-id, the same value Envelope.WriteTo puts in the metadata.
			TrackMsgId: true,
			// MaxWait bounds every publish of this JetStream context: Watermill's Publish
			// takes no context, so this timeout is what ends a publish whose ack never comes.
			ConnectOptions: []nats.JSOpt{nats.MaxWait(o.timeout)},
		},
	}, watermill.NewSlogLogger(o.logger))
	if err != nil {
		return nil, fmt.Errorf("natsbus: publisher: %w", err)
	}
	return &Publisher{wm: wm, timeout: o.timeout, log: o.logger}, nil
}

// Publish publishes e on e.Subject with e.Envelope's headers and e.Body as payload, and returns
// once JetStream acknowledged it. Publishing an event id again within the stream's duplicate
// window stores nothing new and returns nil.
//
// Watermill's Publish takes no context. The message carries ctx (message.SetContext), the
// publish itself is bounded by the publish timeout, and Publish returns ctx's error as soon as
// ctx is done: the publish may then still complete in the background (for at most the timeout),
// which is harmless because a retry with the same id is deduplicated.
//
// Errors: ErrInvalidEvent for an event without subject or envelope id; ctx's error; otherwise
// the publish error (e.g. nats.ErrNoResponders when no stream takes the subject, nats.ErrTimeout
// when no ack came in time), wrapped.
func (p *Publisher) Publish(ctx context.Context, e handlers.Event) error {
	if e.Subject == "" || e.Envelope.ID == "" {
		return fmt.Errorf("%w: subject %q, id %q", ErrInvalidEvent, e.Subject, e.Envelope.ID)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsbus: publish %s %s: %w", e.Subject, e.Envelope.ID, err)
	}
	msg := message.NewMessage(e.Envelope.ID, message.Payload(e.Body))
	e.Envelope.WriteTo(msg.Metadata)
	msg.SetContext(ctx)

	done := make(chan error, 1) // buffered: the publish may finish after we stopped waiting
	go func() { done <- p.wm.Publish(e.Subject, msg) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("natsbus: publish %s %s: %w", e.Subject, e.Envelope.ID, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsbus: publish %s %s: %w", e.Subject, e.Envelope.ID, ctx.Err())
	}
}

// PublishRequest publishes a SyncRequested (or any event) with nats.go directly: env's headers
// (Envelope.WriteTo, which sets Nats-Msg-Id to ce-id) and body, waiting for the stream's ack. The
// ack's Duplicate is true when the id was already stored within the duplicate window. It is what
// the CLI's request and replay commands and tests use. Errors: the publish error, wrapped
// (jetstream.ErrNoStreamResponse when no stream takes the subject).
func PublishRequest(ctx context.Context, js jetstream.JetStream, subject string, env messages.Envelope, body []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	env.WriteTo(msg.Header)
	msg.Data = body
	var opts []jetstream.PublishOpt
	if env.ID != "" {
		opts = append(opts, jetstream.WithMsgID(env.ID))
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: publish %s %s: %w", subject, env.ID, err)
	}
	return ack, nil
}
