// Package natsbus is the NATS JetStream side of the service contract (§1–§2): it creates the
// event stream, drives the durable pull consumer of SyncRequested messages for long-running
// handlers, and publishes outcome events through Watermill.
//
// The consumer is written on nats.go's jetstream API rather than Watermill's subscriber because
// a sync runs for hours: it fetches only as many messages as it has free workers (so no message
// waits in a client buffer while its ack clock runs) and keeps each message alive with
// InProgress() every third of the ack wait until its handler returns.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the contract's stream and consumer.
const (
	DefaultStreamName     = "PATHLING_SYNC"
	DefaultStreamSubject  = "pathling.sync.>"
	DefaultMaxAge         = 30 * 24 * time.Hour
	DefaultDuplicates     = 2 * time.Minute
	DefaultDurable        = "pathling-sync"
	DefaultFilterSubject  = "pathling.sync.requested.>"
	DefaultAckWait        = 60 * time.Second
	DefaultMaxWorkers     = 256
	DefaultFetchWait      = 5 * time.Second
	DefaultShutdownGrace  = 5 * time.Second
	DefaultPublishTimeout = 5 * time.Second
)

// ErrInvalidConfig is wrapped by every configuration error of this package.
var ErrInvalidConfig = errors.New("natsbus: invalid config")

// StreamConfig describes the event stream. Zero fields take the defaults: name PATHLING_SYNC,
// subjects pathling.sync.>, max age 30 days, file storage, 1 replica, duplicate window 2 min, no
// size or count limit. Retention is always by limits, so history can be replayed.
type StreamConfig struct {
	Name     string
	Subjects []string
	MaxAge   time.Duration
	// Storage is jetstream.FileStorage (the zero value) or jetstream.MemoryStorage (tests only).
	Storage  jetstream.StorageType
	Replicas int
	// Duplicates is the window in which JetStream drops a message whose Nats-Msg-Id it has seen.
	Duplicates time.Duration
	// MaxBytes and MaxMsgs bound the stream; 0 means unlimited. The oldest messages go first.
	MaxBytes int64
	MaxMsgs  int64
}

func (c *StreamConfig) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultStreamName
	}
	if len(c.Subjects) == 0 {
		c.Subjects = []string{DefaultStreamSubject}
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
}

func (c *StreamConfig) validate() error {
	if strings.ContainsAny(c.Name, " \t\r\n.*>/\\") {
		return fmt.Errorf("%w: stream name %q", ErrInvalidConfig, c.Name)
	}
	for _, s := range c.Subjects {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("%w: stream subject %q", ErrInvalidConfig, s)
		}
	}
	switch {
	case c.MaxAge < 0:
		return fmt.Errorf("%w: negative stream max age", ErrInvalidConfig)
	case c.Duplicates < 0 || c.Duplicates > c.MaxAge:
		return fmt.Errorf("%w: duplicate window %s must be within max age %s", ErrInvalidConfig, c.Duplicates, c.MaxAge)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("%w: stream replicas %d (1..5)", ErrInvalidConfig, c.Replicas)
	case c.MaxBytes < 0 || c.MaxMsgs < 0:
		return fmt.Errorf("%w: negative stream limit", ErrInvalidConfig)
	}
	return nil
}

// EnsureStream creates the stream, or updates it to cfg when it exists (messages are kept).
// Errors: ErrInvalidConfig for a bad cfg; the server's error otherwise (for instance
// jetstream.ErrStreamNameAlreadyInUse, or an API error when a field such as the storage type
// cannot be changed on an existing stream).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sc := jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     cfg.MaxAge,
		Storage:    cfg.Storage,
		Replicas:   cfg.Replicas,
		Duplicates: cfg.Duplicates,
		MaxBytes:   orUnlimited(cfg.MaxBytes),
		MaxMsgs:    orUnlimited(cfg.MaxMsgs),
	}
	// A cluster that has just started has no meta leader or too few known
	// peers for a while, and replicas starting together race to create the
	// stream: such answers are retried until ctx ends.
	wait := 200 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.CreateOrUpdateStream(actx, sc)
		cancel()
		if err == nil {
			return s, nil
		}
		if !streamErrTransient(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("natsbus: ensure stream %s: %w", cfg.Name, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("natsbus: ensure stream %s: %w", cfg.Name, err)
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// streamErrTransient tells a JetStream that is not ready yet (timeouts, no
// responders, cluster unavailable, no peers yet: 5xx API errors) or a lost
// creation race (stream name in use) from a refusal of the configuration.
func streamErrTransient(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.Code >= 500 || api.ErrorCode == jetstream.JSErrCodeStreamNameInUse
	}
	return !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) &&
		!errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// orUnlimited maps 0 (unset) to JetStream's -1 (unlimited), so that an update clears an old limit.
func orUnlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
