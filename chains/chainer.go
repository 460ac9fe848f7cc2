package chains

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/messages/requester"
)

// Errors of this package.
var (
	// ErrInvalidRule is wrapped by New's errors about a rule.
	ErrInvalidRule = errors.New("chains: invalid rule")
	// ErrInvalidOption is wrapped by the errors of options given bad values.
	ErrInvalidOption = errors.New("chains: invalid option")
	// ErrUndecodable is wrapped by Handle's error for a message that is not
	// a SyncCompleted it can read. Retrying cannot help: the router sends
	// such messages to the poison subject.
	ErrUndecodable = errors.New("chains: undecodable SyncCompleted")
)

// MaxDepth bounds how many chain hops may lead to a request: a SyncCompleted
// whose request id already carries MaxDepth "chain:<rule>:" prefixes fires
// no rule. It stops runaway cycles (which configuration rejects unless every
// rule of the cycle sets allowCycle).
const MaxDepth = 8

// Publisher publishes a SyncRequested with the given envelope (whose id
// becomes Nats-Msg-Id) and returns once the stream stored it; duplicate is
// true when the stream already had the id.
type Publisher interface {
	Publish(ctx context.Context, subject string, env messages.Envelope, body []byte) (duplicate bool, err error)
}

// Chainer applies the rules to SyncCompleted events.
type Chainer struct {
	rules []Rule
	pub   Publisher
	o     options
}

// Option configures a Chainer.
type Option func(*options) error

type options struct {
	requester.Options // subjects, source, logger, tracer, publish timeout, clock
}

// shared turns one of the options every requester has into an Option.
func shared(set requester.Set) Option {
	return func(o *options) error { return set.Apply(&o.Options, ErrInvalidOption) }
}

// WithSubjects sets the subject prefix (default messages.DefaultSubjectPrefix).
func WithSubjects(s messages.Subjects) Option { return shared(requester.Subjects(s)) }

// WithSource sets the CloudEvents source of the requests (default "pathling-sync").
func WithSource(source string) Option { return shared(requester.Source(source)) }

// WithLogger sets the logger (default: discarded).
func WithLogger(l *slog.Logger) Option { return shared(requester.Logger(l)) }

// WithTracer makes each chained request a span in the completed event's
// trace; without it the request carries the completed event's traceparent
// and tracestate unchanged (the same trace either way).
func WithTracer(t trace.Tracer) Option { return shared(requester.Tracer(t)) }

// WithPublishTimeout bounds each publish (default 5 s).
func WithPublishTimeout(d time.Duration) Option { return shared(requester.PublishTimeout(d)) }

// WithClock sets the source of ce-time (default the wall clock).
func WithClock(c clock.Clock) Option { return shared(requester.Clock(c)) }

// New returns a Chainer of rules publishing through pub. Errors wrap
// ErrInvalidRule (a bad or repeated name, a bad target, a request that does
// not validate) or ErrInvalidOption.
func New(rules []Rule, pub Publisher, opts ...Option) (*Chainer, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: nil publisher", ErrInvalidOption)
	}
	o := options{Options: requester.Defaults()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, r := range rules {
		switch {
		case !messages.ValidTarget(r.Name):
			return nil, fmt.Errorf("%w: name %q must match [A-Za-z0-9_-]{1,64}", ErrInvalidRule, r.Name)
		case seen[r.Name]:
			return nil, fmt.Errorf("%w: %s: listed twice", ErrInvalidRule, r.Name)
		case !messages.ValidTarget(r.On.Target) || !messages.ValidTarget(r.Target):
			return nil, fmt.Errorf("%w: %s: targets %q and %q", ErrInvalidRule, r.Name, r.On.Target, r.Target)
		}
		seen[r.Name] = true
		if err := (messages.SyncRequested{Types: r.On.Types}).Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: on: %w", ErrInvalidRule, r.Name, err)
		}
		if err := r.Request.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: request: %w", ErrInvalidRule, r.Name, err)
		}
	}
	return &Chainer{rules: slices.Clone(rules), pub: pub, o: o}, nil
}

// Handle is a Watermill handler (message.NoPublishHandlerFunc) of
// SyncCompleted messages: it publishes the request of every rule the event
// fires, then returns nil (ack). A message it cannot read returns an error
// wrapping ErrUndecodable (for the poison queue); a failed publish returns
// that error, and handling the message again is safe: ids are deterministic,
// so the requests already published are deduplicated.
func (c *Chainer) Handle(msg *message.Message) error {
	ctx := msg.Context()
	target, done, err := c.read(msg)
	if err != nil {
		return err
	}
	log := c.o.Log.With("completed_request_id", done.RequestID, "target", target)
	if d := depth(done.RequestID); d >= MaxDepth {
		log.Warn("chain too deep: no rule fires", "depth", d)
		return nil
	}
	env, _ := messages.ReadEnvelope(msg.Metadata)
	var errs []error
	for _, r := range c.rules {
		if !r.Matches(target, done) {
			continue
		}
		if err := c.publish(ctx, log, r, done, env); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// read decodes a SyncCompleted message and finds its target: the subject's,
// else ce-subject, else the body's.
func (c *Chainer) read(msg *message.Message) (string, messages.SyncCompleted, error) {
	var done messages.SyncCompleted
	env, _ := messages.ReadEnvelope(msg.Metadata)
	if env.Type != "" && env.Type != messages.TypeCompleted {
		return "", done, fmt.Errorf("%w: ce-type %q", ErrUndecodable, env.Type)
	}
	if err := json.Unmarshal(msg.Payload, &done); err != nil {
		return "", done, fmt.Errorf("%w: body: %v", ErrUndecodable, err)
	}
	if done.RequestID == "" {
		return "", done, fmt.Errorf("%w: no requestId", ErrUndecodable)
	}
	target := done.Target
	if env.Subject != "" {
		target = env.Subject
	}
	if subject := msg.Metadata.Get(MetadataSubject); subject != "" {
		if kind, t, ok := c.o.Subjects.TargetOf(subject); ok && kind == messages.KindCompleted {
			target = t
		}
	}
	if !messages.ValidTarget(target) {
		return "", done, fmt.Errorf("%w: target %q", ErrUndecodable, target)
	}
	return target, done, nil
}

func (c *Chainer) publish(ctx context.Context, log *slog.Logger, r Rule, done messages.SyncCompleted, in messages.Envelope) error {
	id := RequestID(r.Name, done.RequestID)
	req := r.Request
	req.CorrelationID = done.CorrelationID
	if req.CorrelationID == "" {
		req.CorrelationID = done.RequestID
	}
	req.RequestedBy = "chain:" + r.Name
	if err := req.Validate(); err != nil {
		// Only the carried correlation id can be at fault (rules validate
		// in New): a body that breaks the contract's limits.
		return fmt.Errorf("%w: %s: %v", ErrUndecodable, id, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("chains: encode %s: %w", id, err)
	}
	subject := c.o.Subjects.Requested(r.Target)
	env := messages.NewRequestEnvelope(id, c.o.Source, r.Target, c.o.Clock.Now(),
		messages.WithTraceContext(in.TraceParent, in.TraceState))
	if c.o.Tracer != nil {
		carrier := propagation.MapCarrier{}
		if in.TraceParent != "" {
			carrier.Set(messages.HeaderTraceParent, in.TraceParent)
			if in.TraceState != "" {
				carrier.Set(messages.HeaderTraceState, in.TraceState)
			}
		}
		var span trace.Span
		ctx, span = c.o.Tracer.Start(propagation.TraceContext{}.Extract(ctx, carrier), "chain "+r.Name,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("pathling_sync.chain", r.Name),
				attribute.String("pathling_sync.target", r.Target),
				attribute.String("pathling_sync.request_id", id),
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", subject),
			))
		defer span.End()
		out := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, out)
		env.TraceParent = out.Get(messages.HeaderTraceParent)
		env.TraceState = out.Get(messages.HeaderTraceState)
	}
	pctx, cancel := context.WithTimeout(ctx, c.o.PublishTimeout)
	defer cancel()
	dup, err := c.pub.Publish(pctx, subject, env, body)
	if err != nil {
		return fmt.Errorf("chains: rule %s: %w", r.Name, err)
	}
	if dup {
		log.Debug("chained request already published", "rule", r.Name, "request_id", id)
	} else {
		log.Info("chained sync requested", "rule", r.Name, "request_id", id, "to", r.Target)
	}
	return nil
}

// permanent reports whether handling a message again cannot succeed: it
// does not decode, or the handler panicked.
func permanent(err error) bool {
	var panicked middleware.RecoveredPanicError
	var panickedPtr *middleware.RecoveredPanicError
	return errors.Is(err, ErrUndecodable) || errors.As(err, &panicked) || errors.As(err, &panickedPtr)
}
