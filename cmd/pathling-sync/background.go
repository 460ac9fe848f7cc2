package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/chains"
	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/schedules"
)

// startBackground starts the service's background workers besides the
// consumer (schedules, chains); they stop when ctx ends, and Run waits for
// them through wg.
func (s *Service) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	pub := requestPublisher{js: s.js}
	subjects := messages.Subjects{Prefix: s.cfg.NATS.Stream.SubjectPrefix}

	if list, err := s.schedules, s.schedulesErr; err != nil {
		s.log.Error("schedules not started", "error", err)
	} else if len(list) > 0 {
		sched, err := schedules.New(pub, list,
			schedules.WithSubjects(subjects),
			schedules.WithSource(s.cfg.Service.Source),
			schedules.WithLogger(s.log.With("component", "schedules")),
			schedules.WithTracer(s.tel.TracerProvider().Tracer("github.com/pathling-sync/pathling-sync/schedules")))
		if err != nil {
			s.log.Error("schedules not started", "error", err)
		} else {
			s.log.Info("schedules started", "schedules", len(list))
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = sched.Run(ctx)
			}()
		}
	}

	if len(s.cfg.Chains) > 0 {
		router, err := s.chainRouter(pub, subjects)
		if err != nil {
			s.log.Error("chains not started", "error", err)
			return
		}
		s.log.Info("chains started", "rules", len(s.cfg.Chains))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = router.Run(ctx)
		}()
	}
}

func (s *Service) chainRouter(pub requestPublisher, subjects messages.Subjects) (*chains.Router, error) {
	log := s.log.With("component", "chains")
	chainer, err := chains.New(chainRules(s.cfg), pub,
		chains.WithSubjects(subjects),
		chains.WithSource(s.cfg.Service.Source),
		chains.WithLogger(log),
		chains.WithTracer(s.tel.TracerProvider().Tracer("github.com/pathling-sync/pathling-sync/chains")))
	if err != nil {
		return nil, err
	}
	return chains.NewRouter(s.nc, s.js, chainer, chains.RouterConfig{
		Stream:   s.cfg.NATS.Stream.Name,
		Durable:  s.cfg.NATS.Consumer.Durable + "-chains",
		Subjects: subjects,
		Logger:   log,
	})
}

// scheduleList turns every target's schedules into the scheduler's.
func scheduleList(cfg *config.Config) ([]schedules.Schedule, error) {
	var out []schedules.Schedule
	for _, name := range cfg.TargetNames() {
		t, _ := cfg.Target(name)
		for _, sc := range t.Schedules {
			spec, err := sc.Parse()
			if err != nil {
				return nil, fmt.Errorf("target %s: schedule %s: %w", name, sc.Name, err)
			}
			out = append(out, schedules.Schedule{
				Target: name, Name: sc.Name, Spec: spec, CatchUp: sc.CatchUp, Request: sc.Request.Request(),
			})
		}
	}
	return out, nil
}

// chainRules turns the configured chain rules into the chainer's.
func chainRules(cfg *config.Config) []chains.Rule {
	out := make([]chains.Rule, 0, len(cfg.Chains))
	for _, c := range cfg.Chains {
		out = append(out, chains.Rule{
			Name:    c.Name,
			On:      chains.Trigger{Target: c.On.Target, Types: c.On.Types, NonEmpty: c.On.NonEmpty},
			Target:  c.Request.Target,
			Request: c.Request.Request(),
		})
	}
	return out
}

// requestPublisher publishes SyncRequested events for the schedules and the
// chains with nats.go (Nats-Msg-Id = ce-id), waiting for the stream's ack.
type requestPublisher struct{ js jetstream.JetStream }

var (
	_ schedules.Publisher = requestPublisher{}
	_ chains.Publisher    = requestPublisher{}
)

func (p requestPublisher) Publish(ctx context.Context, subject string, env messages.Envelope, body []byte) (bool, error) {
	ack, err := natsbus.PublishRequest(ctx, p.js, subject, env, body)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}
