package schedules

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/messages/requester"
)

// ErrInvalidOption is wrapped by the errors of options given bad values.
var ErrInvalidOption = errors.New("schedules: invalid option")

// Option configures a Scheduler.
type Option func(*options) error

type options struct {
	requester.Options // subjects, source, logger, tracer, publish timeout, clock
	retryInitial      time.Duration
	retryMax          time.Duration
	maxWait           time.Duration
}

func defaultOptions() options {
	return options{
		Options:      requester.Defaults(),
		retryInitial: time.Second,
		retryMax:     30 * time.Second,
		maxWait:      time.Minute,
	}
}

// shared turns one of the options every requester has into an Option.
func shared(set requester.Set) Option {
	return func(o *options) error { return set.Apply(&o.Options, ErrInvalidOption) }
}

// WithClock replaces the wall clock (tests drive ticks with a fake one).
func WithClock(c clock.Clock) Option { return shared(requester.Clock(c)) }

// WithSubjects sets the subject prefix requests are published under
// (default: messages.DefaultSubjectPrefix).
func WithSubjects(s messages.Subjects) Option { return shared(requester.Subjects(s)) }

// WithSource sets the CloudEvents source of the requests (default
// "pathling-sync").
func WithSource(source string) Option { return shared(requester.Source(source)) }

// WithLogger sets the logger (default: discarded).
func WithLogger(l *slog.Logger) Option { return shared(requester.Logger(l)) }

// WithTracer makes each tick start a new trace (a producer span) whose
// context the request carries in traceparent; without it requests carry no
// trace context.
func WithTracer(t trace.Tracer) Option { return shared(requester.Tracer(t)) }

// WithPublishTimeout bounds each publish attempt (default 5 s).
func WithPublishTimeout(d time.Duration) Option { return shared(requester.PublishTimeout(d)) }

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
