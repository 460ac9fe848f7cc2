// Package requester holds what the service's own publishers of SyncRequested
// events (schedules, chains) share: their common options, validated in one
// place. Each package keeps its own Option type and exported With* functions
// (their documentation says what the option means there); they set these
// fields through the setters here, so neither package depends on the other.
package requester

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// Options are the options every requester has. Embed it in a package's
// options struct and start from Defaults.
type Options struct {
	Subjects       messages.Subjects
	Source         string // ce-source of the requests
	Log            *slog.Logger
	Tracer         trace.Tracer // nil: no spans of its own
	PublishTimeout time.Duration
	Clock          clock.Clock
}

// Defaults are the options of a requester given none: source
// "pathling-sync", a discarding logger, 5 s per publish, the wall clock.
func Defaults() Options {
	return Options{
		Source:         "pathling-sync",
		Log:            slog.New(slog.DiscardHandler),
		PublishTimeout: 5 * time.Second,
		Clock:          clock.System{},
	}
}

// Set is one option of Options; a package turns it into its own Option
// with Apply.
type Set func(*Options) error

// Apply sets the option in o. Its error says what is wrong, wrapped in
// invalid (the package's ErrInvalidOption).
func (set Set) Apply(o *Options, invalid error) error {
	if err := set(o); err != nil {
		return fmt.Errorf("%w: %w", invalid, err)
	}
	return nil
}

// Subjects sets the subject prefix (an empty one means
// messages.DefaultSubjectPrefix).
func Subjects(s messages.Subjects) Set {
	return func(o *Options) error {
		if s.Prefix != "" && !messages.ValidSubjectPrefix(s.Prefix) {
			return fmt.Errorf("subject prefix %q", s.Prefix)
		}
		o.Subjects = s
		return nil
	}
}

// Source sets the CloudEvents source of the requests.
func Source(source string) Set {
	return func(o *Options) error {
		if source == "" {
			return errors.New("empty source")
		}
		o.Source = source
		return nil
	}
}

// Logger sets the logger.
func Logger(l *slog.Logger) Set {
	return func(o *Options) error {
		if l == nil {
			return errors.New("nil logger")
		}
		o.Log = l
		return nil
	}
}

// Tracer sets the tracer (nil: none).
func Tracer(t trace.Tracer) Set {
	return func(o *Options) error {
		o.Tracer = t
		return nil
	}
}

// PublishTimeout bounds each publish.
func PublishTimeout(d time.Duration) Set {
	return func(o *Options) error {
		if d <= 0 {
			return fmt.Errorf("publish timeout %s", d)
		}
		o.PublishTimeout = d
		return nil
	}
}

// Clock sets the time source.
func Clock(c clock.Clock) Set {
	return func(o *Options) error {
		if c == nil {
			return errors.New("nil clock")
		}
		o.Clock = c
		return nil
	}
}
