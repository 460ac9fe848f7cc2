package chains

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Defaults of RouterConfig.
const (
	DefaultStream        = "PATHLING_SYNC"
	DefaultDurable       = "pathling-sync-chains"
	DefaultAckWait       = 30 * time.Second
	DefaultNakDelay      = 5 * time.Second
	DefaultMaxAckPending = 64
)

// RouterConfig configures the Router. Zero fields take the defaults.
type RouterConfig struct {
	// Stream is the event stream (default PATHLING_SYNC). It must exist.
	Stream string
	// Durable is the consumer's name, shared by all replicas (default
	// pathling-sync-chains). It is also the queue group, and its deliver
	// subject is "_INBOX.<stream>.<durable>".
	Durable string
	// Subjects gives the prefix: the consumer reads <prefix>.completed.>
	// and poisoned messages go to <prefix>.poison.chains, inside the
	// stream's subjects but read by no consumer of the service.
	Subjects messages.Subjects
	// AckWait is how long a handler may take before Watermill gives up the
	// message (default 30 s); the server redelivers after twice that.
	AckWait time.Duration
	// NakDelay is how long a message that failed (after the retries) waits
	// before it is redelivered (default 5 s).
	NakDelay time.Duration
	// MaxAckPending bounds unacked deliveries across replicas (default 64).
	MaxAckPending int
	// Retry is the in-handler retry of transient failures (publishes);
	// zero fields take 3 retries from 200 ms, doubling up to 2 s.
	Retry middleware.Retry
	// Logger receives the router's logs (default: discarded).
	Logger *slog.Logger
}

func (c *RouterConfig) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.NakDelay == 0 {
		c.NakDelay = DefaultNakDelay
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.Retry.MaxRetries == 0 {
		c.Retry.MaxRetries = 3
	}
	if c.Retry.InitialInterval == 0 {
		c.Retry.InitialInterval = 200 * time.Millisecond
	}
	if c.Retry.MaxInterval == 0 {
		c.Retry.MaxInterval = 2 * time.Second
	}
	if c.Retry.Multiplier == 0 {
		c.Retry.Multiplier = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *RouterConfig) validate() error {
	switch {
	case strings.ContainsAny(c.Stream, " \t\r\n.*>/\\"):
		return fmt.Errorf("%w: stream %q", ErrInvalidOption, c.Stream)
	case strings.ContainsAny(c.Durable, " \t\r\n.*>/\\"):
		return fmt.Errorf("%w: durable %q", ErrInvalidOption, c.Durable)
	case c.Subjects.Prefix != "" && !messages.ValidSubjectPrefix(c.Subjects.Prefix):
		return fmt.Errorf("%w: subject prefix %q", ErrInvalidOption, c.Subjects.Prefix)
	case c.AckWait < 100*time.Millisecond || c.NakDelay < 0 || c.MaxAckPending < 1:
		return fmt.Errorf("%w: ack wait %s, nak delay %s, max ack pending %d", ErrInvalidOption, c.AckWait, c.NakDelay, c.MaxAckPending)
	}
	return nil
}

// CompletedFilter is the subject filter of the chain consumer:
// "<prefix>.completed.>".
func CompletedFilter(s messages.Subjects) string {
	return strings.TrimSuffix(s.All(), ">") + messages.KindCompleted + ".>"
}

// PoisonSubject is where messages the chains cannot handle go:
// "<prefix>.poison.chains".
func PoisonSubject(s messages.Subjects) string {
	return strings.TrimSuffix(s.All(), ">") + "poison.chains"
}

// Router runs a Chainer as a Watermill router handler on a durable
// JetStream consumer of SyncCompleted events.
//
// The consumer is a push consumer with a deliver group, created (or updated)
// by the router with nats.go's jetstream API and then bound by
// watermill-nats' subscriber: created by the subscriber itself it would be
// deleted when the subscriber unsubscribes, and created fresh with
// "deliver new" it would skip what completed while no replica ran. When
// first created it starts at new events: the stream's history never fires
// rules by accident.
//
// Middleware, outermost first: a poison queue (undecodable messages and
// panics are published to PoisonSubject and acked), retry (transient
// failures, with backoff), recoverer (panics become errors). A message that
// still fails is nacked and redelivered after NakDelay.
type Router struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	chainer *Chainer
	cfg     RouterConfig
}

// NewRouter returns a router of chainer's rules over nc (the connection
// stays the caller's). Errors wrap ErrInvalidOption.
func NewRouter(nc *nats.Conn, js jetstream.JetStream, chainer *Chainer, cfg RouterConfig) (*Router, error) {
	if nc == nil || js == nil || chainer == nil {
		return nil, fmt.Errorf("%w: nil connection, JetStream or chainer", ErrInvalidOption)
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Router{nc: nc, js: js, chainer: chainer, cfg: cfg}, nil
}

// Run consumes until ctx ends, then returns nil. Failures to set up (NATS
// unreachable, the stream missing) are logged and retried with backoff.
func (r *Router) Run(ctx context.Context) error {
	wait := time.Second
	for {
		err := r.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.cfg.Logger.Error("chain router stopped; restarting", "error", err, "retry_in", wait)
		} else {
			r.cfg.Logger.Warn("chain router stopped; restarting", "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

// EnsureConsumer creates or updates the durable consumer. Errors: the
// server's, wrapped.
func (r *Router) EnsureConsumer(ctx context.Context) error {
	_, err := r.js.CreateOrUpdatePushConsumer(ctx, r.cfg.Stream, jetstream.ConsumerConfig{
		Durable:        r.cfg.Durable,
		Description:    "pathling-sync chain rules (SyncCompleted -> SyncRequested)",
		DeliverSubject: "_INBOX." + r.cfg.Stream + "." + r.cfg.Durable,
		DeliverGroup:   r.cfg.Durable,
		FilterSubject:  CompletedFilter(r.cfg.Subjects),
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        2 * r.cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  r.cfg.MaxAckPending,
	})
	if err != nil {
		return fmt.Errorf("chains: consumer %s on stream %s: %w", r.cfg.Durable, r.cfg.Stream, err)
	}
	return nil
}

func (r *Router) runOnce(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := r.EnsureConsumer(sctx)
	cancel()
	if err != nil {
		return err
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(r.cfg.Logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	sub, err := wmnats.NewSubscriberWithNatsConn(r.nc, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:      unmarshaler{},
		SubscribersCount: 1,
		AckWaitTimeout:   r.cfg.AckWait,
		CloseTimeout:     5 * time.Second,
		SubscribeTimeout: 15 * time.Second,
		NakDelay:         wmnats.NewStaticDelay(r.cfg.NakDelay),
		QueueGroupPrefix: r.cfg.Durable,
		JetStream: wmnats.JetStreamConfig{
			DurablePrefix: r.cfg.Durable,
			// Bind to the consumer EnsureConsumer made; ManualAck leaves
			// acks to Watermill (nats.go would otherwise ack after the
			// callback, even a message Watermill nacked or gave up).
			SubscribeOptions: []nats.SubOpt{nats.Bind(r.cfg.Stream, r.cfg.Durable), nats.ManualAck()},
		},
	}, wlog)
	if err != nil {
		return fmt.Errorf("chains: subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return fmt.Errorf("chains: router: %w", err)
	}
	poison, err := middleware.PoisonQueueWithFilter(&poisonPublisher{js: r.js, timeout: 5 * time.Second},
		PoisonSubject(r.cfg.Subjects), permanent)
	if err != nil {
		return fmt.Errorf("chains: poison queue: %w", err)
	}
	retry := r.cfg.Retry
	shouldRetry := retry.ShouldRetry
	retry.ShouldRetry = func(p middleware.RetryParams) bool {
		return !permanent(p.Err) && (shouldRetry == nil || shouldRetry(p))
	}
	retry.ResetContextOnRetry = true
	if retry.Logger == nil {
		// A retried failure is a warning; the final one is logged as an error.
		retry.Logger = watermill.NewSlogLoggerWithLevelMapping(r.cfg.Logger, map[slog.Level]slog.Level{slog.LevelError: slog.LevelWarn})
	}
	router.AddMiddleware(poison, retry.Middleware, middleware.Recoverer)
	router.AddConsumerHandler("chains", CompletedFilter(r.cfg.Subjects), sharedConnSubscriber{sub}, r.chainer.Handle)
	err = router.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("chains: router: %w", err)
	}
	return nil
}
