package schedules

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/messages"
)

// ErrInvalidOption is wrapped by the errors of options given bad values.
var ErrInvalidOption = errors.New("schedules: invalid option")

// Option configures a Scheduler.
type Option func(*options) error

type options struct {
	clock          Clock
	subjects       messages.Subjects
	source         string
	log            *slog.Logger
	tracer         trace.Tracer
	publishTimeout time.Duration
	retryInitial   time.Duration
	retryMax       time.Duration
	maxWait        time.Duration
}

func defaultOptions() options {
	return options{
		clock:          realClock{},
		source:         "pathling-sync",
		log:            slog.New(slog.DiscardHandler),
		publishTimeout: 5 * time.Second,
		retryInitial:   time.Second,
		retryMax:       30 * time.Second,
		maxWait:        time.Minute,
	}
}

// WithClock replaces the wall clock (tests drive ticks with a fake one).
func WithClock(c Clock) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.clock = c
		return nil
	}
}

// WithSubjects sets the subject prefix requests are published under
// (default: messages.DefaultSubjectPrefix).
func WithSubjects(s messages.Subjects) Option {
	return func(o *options) error {
		if s.Prefix != "" && !messages.ValidSubjectPrefix(s.Prefix) {
			return fmt.Errorf("%w: subject prefix %q", ErrInvalidOption, s.Prefix)
		}
		o.subjects = s
		return nil
	}
}

// WithSource sets the CloudEvents source of the requests (default
// "pathling-sync").
func WithSource(source string) Option {
	return func(o *options) error {
		if source == "" {
			return fmt.Errorf("%w: empty source", ErrInvalidOption)
		}
		o.source = source
		return nil
	}
}

// WithLogger sets the logger (default: discarded).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// WithTracer makes each tick start a new trace (a producer span) whose
// context the request carries in traceparent; without it requests carry no
// trace context.
func WithTracer(t trace.Tracer) Option {
	return func(o *options) error {
		o.tracer = t
		return nil
	}
}

// WithPublishTimeout bounds each publish attempt (default 5 s).
func WithPublishTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: publish timeout %s", ErrInvalidOption, d)
		}
		o.publishTimeout = d
		return nil
	}
}

// WithRetry sets the backoff between failed publishes of a tick: initial,
// doubling up to max (default 1 s to 30 s).
func WithRetry(initial, max time.Duration) Option {
	return func(o *options) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("%w: retry %s..%s", ErrInvalidOption, initial, max)
		}
		o.retryInitial, o.retryMax = initial, max
		return nil
	}
}
