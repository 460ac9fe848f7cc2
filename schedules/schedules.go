// Package schedules publishes SyncRequested events on cron schedules.
//
// Every replica of the service runs a Scheduler over the same schedules. At
// each tick each replica publishes a SyncRequested with the same
// deterministic id (RequestID: target, schedule name and tick), and
// JetStream's duplicate window (Nats-Msg-Id = ce-id) keeps exactly one copy.
// A copy that arrives after the window (a replica whose clock is far off, a
// catch-up at start-up) carries an id the service has a run record for: the
// service re-publishes that run's outcome instead of importing again.
//
// Ticks missed while no replica ran are not back-filled; a schedule with
// CatchUp publishes the latest one at start-up.
package schedules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/messages"
)

// ErrInvalidSchedule is wrapped by New's errors about a schedule.
var ErrInvalidSchedule = errors.New("schedules: invalid schedule")

// Schedule is one cron schedule of one target.
type Schedule struct {
	// Target is the target the requests go to.
	Target string
	// Name identifies the schedule within its target (it is part of the ids).
	Name string
	// Spec gives the ticks (see Parse, NextTick).
	Spec cron.Schedule
	// CatchUp publishes the latest tick before start-up (see Scheduler.Run).
	CatchUp bool
	// Request holds the request's fields; empty ones take the target's
	// defaults in the service. RequestedBy is set by the scheduler.
	Request messages.SyncRequested
}

// Publisher publishes a SyncRequested with the given envelope (whose id
// becomes Nats-Msg-Id) and returns once the stream stored it; duplicate is
// true when the stream already had the id (another replica was first).
type Publisher interface {
	Publish(ctx context.Context, subject string, env messages.Envelope, body []byte) (duplicate bool, err error)
}

// Scheduler publishes the SyncRequested events of a set of schedules.
type Scheduler struct {
	pub       Publisher
	schedules []Schedule
	o         options
}

// New returns a scheduler of schedules publishing through pub. Errors wrap
// ErrInvalidSchedule (an invalid target or schedule name, a missing Spec, a
// request that does not validate, two schedules with the same target and
// name) or ErrInvalidOption.
func New(pub Publisher, schedules []Schedule, opts ...Option) (*Scheduler, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: nil publisher", ErrInvalidOption)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	seen := map[[2]string]bool{}
	for _, s := range schedules {
		switch {
		case !messages.ValidTarget(s.Target):
			return nil, fmt.Errorf("%w: target %q", ErrInvalidSchedule, s.Target)
		case !messages.ValidTarget(s.Name):
			return nil, fmt.Errorf("%w: %s: name %q must match [A-Za-z0-9_-]{1,64}", ErrInvalidSchedule, s.Target, s.Name)
		case s.Spec == nil:
			return nil, fmt.Errorf("%w: %s/%s: no cron spec", ErrInvalidSchedule, s.Target, s.Name)
		case seen[[2]string{s.Target, s.Name}]:
			return nil, fmt.Errorf("%w: %s/%s: listed twice", ErrInvalidSchedule, s.Target, s.Name)
		}
		seen[[2]string{s.Target, s.Name}] = true
		if err := request(s).Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s/%s: request: %w", ErrInvalidSchedule, s.Target, s.Name, err)
		}
	}
	return &Scheduler{pub: pub, schedules: slices.Clone(schedules), o: o}, nil
}

// Run evaluates every schedule until ctx ends, then returns nil.
//
// At start-up a schedule with CatchUp publishes its latest tick at or before
// now (by construction less than one period old); the others wait for their
// next tick. When a tick is due the scheduler publishes it, retrying failed
// publishes with backoff until the schedule's following tick, when that tick
// takes over. A scheduler that wakes late (a suspended process) publishes
// only the latest due tick.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, sc := range s.schedules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, sc)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Scheduler) run(ctx context.Context, sc Schedule) {
	log := s.o.Log.With("target", sc.Target, "schedule", sc.Name)
	now := s.o.Clock.Now()
	if sc.CatchUp {
		if prev, ok := PrevTick(sc.Spec, now); ok {
			log.Info("catching up the latest tick before start-up", "tick", prev.UTC())
			s.fire(ctx, log, sc, prev, NextTick(sc.Spec, now))
		}
	}
	next := NextTick(sc.Spec, now)
	for {
		if next.IsZero() {
			log.Warn("schedule has no further ticks")
			return
		}
		if !s.waitUntil(ctx, next) {
			return
		}
		tick, skipped := latestDue(sc.Spec, next, s.o.Clock.Now())
		if skipped > 0 {
			log.Warn("woke late: skipping missed ticks", "skipped", skipped, "tick", tick.UTC())
		}
		following := NextTick(sc.Spec, tick)
		s.fire(ctx, log, sc, tick, following)
		next = following
	}
}

// waitUntil waits until the clock reaches t; false when ctx ended first.
// Waits are cut into pieces of at most maxWait, so that a wall clock that
// jumps (NTP, a suspended VM) is noticed.
func (s *Scheduler) waitUntil(ctx context.Context, t time.Time) bool {
	for {
		d := t.Sub(s.o.Clock.Now())
		if d <= 0 {
			return true
		}
		d = min(d, s.o.maxWait)
		select {
		case <-ctx.Done():
			return false
		case <-s.o.Clock.After(d):
		}
	}
}

// fire publishes the tick's request, retrying until it is stored, until the
// clock reaches giveUp (the following tick; zero: never) or until ctx ends.
func (s *Scheduler) fire(ctx context.Context, log *slog.Logger, sc Schedule, tick, giveUp time.Time) {
	id := RequestID(sc.Target, sc.Name, tick)
	req := request(sc)
	body, err := json.Marshal(req)
	if err != nil { // cannot happen: strings and string lists
		log.Error("encode request", "error", err)
		return
	}
	// Stamped with the tick, not the wall clock: every replica's copy is the same event.
	env := messages.NewRequestEnvelope(id, s.o.Source, sc.Target, tick)
	pctx := ctx
	if s.o.Tracer != nil {
		var span trace.Span
		pctx, span = s.o.Tracer.Start(ctx, "schedule "+sc.Target+"/"+sc.Name,
			trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("pathling_sync.target", sc.Target),
				attribute.String("pathling_sync.schedule", sc.Name),
				attribute.String("pathling_sync.request_id", id),
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", s.o.Subjects.Requested(sc.Target)),
			))
		defer span.End()
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(pctx, carrier)
		env.TraceParent = carrier.Get(messages.HeaderTraceParent)
		env.TraceState = carrier.Get(messages.HeaderTraceState)
	}
	subject := s.o.Subjects.Requested(sc.Target)
	wait := s.o.retryInitial
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(pctx, s.o.PublishTimeout)
		dup, err := s.pub.Publish(cctx, subject, env, body)
		cancel()
		if err == nil {
			if dup {
				log.Debug("tick already published by another replica", "request_id", id)
			} else {
				log.Info("scheduled sync requested", "request_id", id, "tick", tick.UTC())
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		now := s.o.Clock.Now()
		if !giveUp.IsZero() && !now.Add(wait).Before(giveUp) {
			log.Error("giving up a tick: publish kept failing until the next tick", "request_id", id, "attempts", attempt, "error", err)
			return
		}
		log.Warn("publishing a scheduled request failed; retrying", "request_id", id, "attempt", attempt, "retry_in", wait, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-s.o.Clock.After(wait):
		}
		if !giveUp.IsZero() && !s.o.Clock.Now().Before(giveUp) {
			log.Error("giving up a tick: the next tick is due", "request_id", id, "attempts", attempt)
			return
		}
		wait = min(wait*2, s.o.retryMax)
	}
}

// request is the SyncRequested a schedule publishes.
func request(sc Schedule) messages.SyncRequested {
	r := sc.Request
	r.Types = slices.Clone(r.Types)
	r.TypeFilters = slices.Clone(r.TypeFilters)
	r.Elements = slices.Clone(r.Elements)
	r.IncludeAssociatedData = slices.Clone(r.IncludeAssociatedData)
	r.RequestedBy = "schedule:" + sc.Name
	return r
}
