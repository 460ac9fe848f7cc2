package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

var _ handlers.Publisher = (*Publisher)(nil)

// ErrInvalidEvent is returned by Publish for an event without subject or id.
var ErrInvalidEvent = errors.New("natsbus: invalid event")

// Publisher publishes the service's outcomes to JetStream, waiting for the stream's ack. It goes
// through PublishRequest, the one publish path of the service: on the wire each message carries
// exactly the headers Envelope.WriteTo writes (ce-*, content-type, traceparent, tracestate,
// Nats-Msg-Id = ce-id, with these exact spellings: NATS headers are case-sensitive and nats.go
// does not change them), nothing else.
type Publisher struct {
	js      jetstream.JetStream
	timeout time.Duration
}

// PublisherOption configures a Publisher.
type PublisherOption func(*publisherOptions) error

type publisherOptions struct {
	timeout time.Duration
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

// NewPublisher returns a publisher on nc. The connection stays the caller's: the publisher never
// closes it, so it has no Close method. Errors: ErrInvalidConfig; the error of creating the
// JetStream context.
func NewPublisher(nc *nats.Conn, opts ...PublisherOption) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidConfig)
	}
	o := publisherOptions{timeout: DefaultPublishTimeout}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsbus: publisher: %w", err)
	}
	return &Publisher{js: js, timeout: o.timeout}, nil
}

// Publish publishes e on e.Subject with e.Envelope's headers and e.Body as payload, and returns
// once JetStream acknowledged it, within ctx and the publish timeout. Publishing an event id again
// within the stream's duplicate window stores nothing new and returns nil.
//
// Errors: ErrInvalidEvent for an event without subject or envelope id; ctx's error (or
// context.DeadlineExceeded when no ack came within the publish timeout); otherwise the publish
// error (e.g. jetstream.ErrNoStreamResponse when no stream takes the subject), wrapped.
func (p *Publisher) Publish(ctx context.Context, e handlers.Event) error {
	if e.Subject == "" || e.Envelope.ID == "" {
		return fmt.Errorf("%w: subject %q, id %q", ErrInvalidEvent, e.Subject, e.Envelope.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	_, err := PublishRequest(ctx, p.js, e.Subject, e.Envelope, e.Body)
	return err
}

// PublishRequest publishes an event (a SyncRequested from the CLI's request and replay commands,
// schedules and chains, or an outcome through Publisher) with env's headers (Envelope.WriteTo,
// which sets Nats-Msg-Id to ce-id) and body, waiting for the stream's ack. The ack's Duplicate is
// true when the id was already stored within the duplicate window. Errors: ctx's error; the
// publish error, wrapped (jetstream.ErrNoStreamResponse when no stream takes the subject).
func PublishRequest(ctx context.Context, js jetstream.JetStream, subject string, env messages.Envelope, body []byte) (*jetstream.PubAck, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsbus: publish %s %s: %w", subject, env.ID, err)
	}
	msg := nats.NewMsg(subject)
	env.WriteTo(msg.Header) // Nats-Msg-Id included: jetstream.WithMsgID would only set it again
	msg.Data = body
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("natsbus: publish %s %s: %w", subject, env.ID, err)
	}
	return ack, nil
}
