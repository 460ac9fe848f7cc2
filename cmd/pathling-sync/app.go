package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/observability"
	"github.com/pathling-sync/pathling-sync/schedules"
)

// errInfra marks failures to reach NATS or Redis (exit code 3).
var errInfra = errors.New("infrastructure unreachable")

// Service is the running sync service: it wires the configuration to NATS,
// Redis, Pathling and the handler, and serves the admin endpoints.
type Service struct {
	cfg      *config.Config
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	rdb      redis.UniversalClient
	store    *redisstore.Store
	releases *redisstore.Releases // lock releases, for queued requests waiting here
	consumer *natsbus.Consumer
	syncer   *handlers.Syncer
	admin    *http.Server
	adminLn  net.Listener
	stopping atomic.Bool
	stopAt   atomic.Int64 // Unix nanoseconds when shutdown began
	tel      *observability.Telemetry
	metrics  *observability.Metrics

	// schedules are the targets' cron schedules (or why they could not be
	// read), taken from the configuration before its targets are dropped.
	schedules    []schedules.Schedule
	schedulesErr error

	// onStopping, when set (tests), runs once shutdown has begun, while the
	// admin listener still serves.
	onStopping func()
}

// The flush of spans and metrics at shutdown gets what is left of the 10 s a
// SIGTERM leaves (shutdownBudget from the moment shutdown began, less a
// second for closing connections), within these bounds.
const (
	shutdownBudget           = 10 * time.Second
	minTelemetryFlushTimeout = 500 * time.Millisecond
	maxTelemetryFlushTimeout = 3 * time.Second
)

// ServiceOption configures NewService.
type ServiceOption func(*serviceOptions)

type serviceOptions struct {
	getenv func(string) string
}

// WithEnv sets where the OTEL_* variables are read (default os.Getenv).
func WithEnv(getenv func(string) string) ServiceOption {
	return func(o *serviceOptions) {
		if getenv != nil {
			o.getenv = getenv
		}
	}
}

// NewService sets up telemetry (from the OTEL_* variables), connects to NATS
// and Redis, ensures the stream and builds the consumer. It does not start
// consuming: Run does. The service keeps cfg without its targets (see
// withoutTargets): a caller that holds on to cfg keeps them alive.
func NewService(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...ServiceOption) (*Service, error) {
	o := serviceOptions{getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if limit := applyMemoryLimit(o.getenv, os.ReadFile); limit > 0 {
		log.Info("soft memory limit set to the container's memory limit (GOMEMLIMIT unset)", "bytes", limit)
	}
	s := &Service{cfg: cfg, log: log}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	var err error
	s.tel, err = observability.Setup(ctx, observability.Options{
		ServiceName:    "pathling-sync",
		ServiceVersion: version,
		InstanceID:     cfg.Service.InstanceID,
		Getenv:         o.getenv,
		Logger:         log,
		Targets:        len(cfg.TargetNames()),
	})
	if err != nil {
		return nil, usageError{fmt.Errorf("telemetry: %w", err)}
	}
	s.nc, err = connectNATS(cfg.NATS, "pathling-sync "+cfg.Service.InstanceID, log)
	if err != nil {
		return nil, err
	}
	s.js, err = jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", errInfra, err)
	}
	subjects := messages.Subjects{Prefix: cfg.NATS.Stream.SubjectPrefix}
	// A JetStream cluster that has just started may take a while to accept the stream.
	ectx, ecancel := context.WithTimeout(ctx, 60*time.Second)
	defer ecancel()
	if _, err := natsbus.EnsureStream(ectx, s.js, natsbus.StreamConfig{
		Name:       cfg.NATS.Stream.Name,
		Subjects:   []string{subjects.All()},
		MaxAge:     cfg.NATS.Stream.MaxAge,
		Storage:    jetstream.FileStorage,
		Replicas:   cfg.NATS.Stream.Replicas,
		Duplicates: cfg.NATS.Stream.Duplicates,
		MaxBytes:   cfg.NATS.Stream.MaxBytes,
	}); err != nil {
		return nil, fmt.Errorf("%w: stream %s: %v", errInfra, cfg.NATS.Stream.Name, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()

	s.rdb, err = connectRedis(sctx, cfg.Redis)
	if err != nil {
		return nil, err
	}
	// Counted from here on: the service's own round trips, not the connect's PING.
	roundTrips := &redisstore.RoundTrips{}
	s.rdb.AddHook(roundTrips)
	s.store = redisstore.New(s.rdb, redisstore.WithPrefix(cfg.Redis.KeyPrefix), redisstore.WithRetention(cfg.Redis.Retention))
	s.releases = redisstore.NewReleases(s.rdb, cfg.Redis.KeyPrefix, log.With("component", "releases"))
	s.metrics, err = observability.NewMetrics(s.tel.MeterProvider(), observability.MetricsConfig{
		Targets:         cfg.TargetNames(),
		Watermarks:      s.store.Watermarks,
		RedisRoundTrips: roundTrips.Load,
	})
	if err != nil {
		return nil, err
	}
	s.checkRedisPersistence(sctx)

	pub, err := natsbus.NewPublisher(s.nc)
	if err != nil {
		return nil, err
	}
	targets, err := buildTargets(cfg, log, s.tel.TracerProvider(), s.metrics)
	if err != nil {
		return nil, err
	}
	s.syncer, err = handlers.New(handlers.Config{
		Targets:    targets,
		Subjects:   subjects,
		Source:     cfg.Service.Source,
		LockTTL:    cfg.Redis.LockTTL,
		QueueRetry: cfg.Service.QueueRetry,
		Driver:     cfg.Service.InstanceID,
		Logger:     log,

		// Queued requests waiting here for a release hold active slots
		// (they are not parked): at most half of them.
		QueueWaiters: max(1, maxActive(cfg.NATS.Consumer.MaxWorkers)/2),

		Observer:       s.metrics,
		TracerProvider: s.tel.TracerProvider(),
		ConsumerGroup:  cfg.NATS.Consumer.Durable,
		// Job durations for the targets whose poll policy is history.
		Durations: redisstore.NewDurationCache(s.store, 0, nil),
	}, handlers.Ports{
		Locker: s.store, Recovery: s.store, Runs: s.store, Watermarks: s.store, Jobs: s.store,
		Publisher: pub, Releases: s.releases,
		Precedence: natsbus.NewPrecedence(s.js, cfg.NATS.Stream.Name, cfg.NATS.Consumer.Durable, 0),
	})
	if err != nil {
		return nil, err
	}
	s.consumer, err = natsbus.NewConsumer(s.js, natsbus.ConsumerConfig{
		Stream:        cfg.NATS.Stream.Name,
		Durable:       cfg.NATS.Consumer.Durable,
		FilterSubject: subjects.RequestedFilter(),
		AckWait:       cfg.NATS.Consumer.AckWait,
		MaxDeliver:    cfg.NATS.Consumer.MaxDeliver,
		MaxAckPending: cfg.NATS.Consumer.MaxAckPending,
		MaxWorkers:    cfg.NATS.Consumer.MaxWorkers,
		MaxActive:     maxActive(cfg.NATS.Consumer.MaxWorkers),
		ShutdownGrace: cfg.Service.ShutdownGrace,
		Logger:        log,
	}, s.syncer.Handle)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Addr != "" {
		s.adminLn, err = net.Listen("tcp", cfg.Admin.Addr)
		if err != nil {
			return nil, fmt.Errorf("admin listener %s: %w", cfg.Admin.Addr, err)
		}
		s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	}
	s.schedules, s.schedulesErr = scheduleList(cfg)
	// Everything of the targets' configuration that runs need has been
	// taken above (handler targets, Pathling clients, schedules): the
	// service keeps the rest of the configuration, not the targets (~700
	// bytes each, 7 MB at 10,000 targets).
	s.cfg = withoutTargets(cfg)
	ok = true
	// Reading and checking the configuration of many targets makes garbage
	// many times the size of what stays (10,000 targets: ~120 MB allocated,
	// ~15 MB kept); collect it now and give its pages back, rather than carry
	// the start-up peak as RSS until the runtime's scavenger gets there.
	debug.FreeOSMemory()
	return s, nil
}

// withoutTargets returns a copy of cfg without its targets.
func withoutTargets(cfg *config.Config) *config.Config {
	c := *cfg
	c.Targets = nil
	return &c
}

// AdminAddr is the admin listener's address ("" when disabled).
func (s *Service) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// Run consumes until ctx ends, then shuts down: stop fetching, cancel the
// runs (their state stays in Redis for the next driver), close connections.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if s.admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin server", "error", err)
			}
		}()
	}
	s.log.Info("pathling-sync serving", targetsAttr(s.syncer.Targets()), "instance", s.cfg.Service.InstanceID,
		"stream", s.cfg.NATS.Stream.Name, "consumer", s.cfg.NATS.Consumer.Durable, "admin", s.AdminAddr())
	// Not ready from the moment shutdown begins, while runs settle.
	stopWatch := context.AfterFunc(ctx, s.beginStopping)
	defer stopWatch()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.seedLastSuccess(ctx)
	}()
	s.startBackground(ctx, &wg)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.releases.Run(ctx)
	}()
	err := s.consumer.Run(ctx)
	s.beginStopping()
	if s.onStopping != nil {
		s.onStopping()
	}
	if s.admin != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.admin.Shutdown(sctx)
		cancel()
	}
	wg.Wait()
	// The consumer has stopped: every span of this process has ended.
	s.shutdownTelemetry()
	s.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// maxLoggedTargets is how many target names the start-up line lists; beyond
// it, only their number (a deployment of 10,000 targets would write a line
// of 80 kB).
const maxLoggedTargets = 50

// targetsAttr is the start-up line's targets: their names, or their number
// and the first names when there are many.
func targetsAttr(names []string) slog.Attr {
	if len(names) <= maxLoggedTargets {
		return slog.Any("targets", names)
	}
	return slog.Group("targets", "count", len(names), "first", names[:maxLoggedTargets])
}

// seedLastSuccess sets each target's last-success gauge from the stored run
// records, so that it survives restarts (best effort, bounded).
func (s *Service) seedLastSuccess(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, target := range s.syncer.Targets() {
		runs, err := s.store.ListRuns(ctx, target)
		if err != nil {
			s.log.Debug("seeding last success from run records", "target", target, "error", err)
			continue
		}
		for _, r := range runs {
			if r.State == handlers.RunCompleted {
				s.metrics.SeedLastSuccess(target, r.FinishedAt)
			}
		}
	}
}

// beginStopping marks the service as shutting down: /readyz answers 503.
func (s *Service) beginStopping() {
	if !s.stopping.Swap(true) {
		s.stopAt.Store(time.Now().UnixNano())
	}
}

// shutdownTelemetry flushes spans and metrics, within what is left of the
// shutdown budget.
func (s *Service) shutdownTelemetry() {
	if s.tel == nil {
		return
	}
	timeout := maxTelemetryFlushTimeout
	if at := s.stopAt.Load(); at != 0 {
		left := time.Until(time.Unix(0, at).Add(shutdownBudget - time.Second))
		timeout = max(minTelemetryFlushTimeout, min(left, maxTelemetryFlushTimeout))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.tel.Shutdown(ctx); err != nil {
		s.log.Warn("flushing telemetry", "error", err)
	}
}

// Close releases the connections and flushes telemetry. Safe to call more
// than once.
func (s *Service) Close() {
	s.shutdownTelemetry()
	if s.nc != nil {
		_ = s.nc.Drain()
		s.nc.Close()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
}

func (s *Service) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		// The process answers: that is all liveness means (no dependency checks).
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", s.tel.MetricsHandler())
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if msg := s.notReady(r.Context()); msg != "" {
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if s.cfg.Admin.PProf {
		// Only on this mux, and only when asked for: the package's init also
		// registers them on http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *Service) notReady(ctx context.Context) string {
	switch {
	case s.stopping.Load():
		return "shutting down"
	case !s.consumer.Bound():
		return "NATS consumer not bound"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return "Redis unreachable"
	}
	return ""
}

// checkRedisPersistence says once at start-up, loudly, when Redis keeps
// nothing across a restart, and sets the persistence gauge.
func (s *Service) checkRedisPersistence(ctx context.Context) {
	p, err := redisstore.CheckPersistence(ctx, s.rdb)
	switch {
	case errors.Is(err, redisstore.ErrConfigUnavailable):
		s.log.Info("could not check whether Redis persists its data (CONFIG GET is not allowed or not supported); "+
			"make sure it runs with appendonly yes", "error", err)
	case err != nil:
		s.log.Warn("could not check whether Redis persists its data", "error", err)
	case !p.Enabled():
		s.metrics.SetRedisPersistence(false)
		s.log.Error("Redis runs without persistence (appendonly no, no save schedule): a Redis restart loses every " +
			"lock, run record and watermark. Running syncs then take their locks back, but a request arriving in " +
			"between can start a second import on the same Pathling (the first one is then cancelled), and the next " +
			"since=auto syncs are full exports. Run Redis with appendonly yes (docs/deploying.md).")
	default:
		s.metrics.SetRedisPersistence(true)
		s.log.Info("Redis persists its data", "appendonly", p.AOF, "save", p.RDB)
	}
}

func connectNATS(c config.NATSConfig, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
	)
	nc, err := nats.Connect(c.URL.Reveal(), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: NATS %s: %v", errInfra, c.URL, err)
	}
	// A server older than the minimum is refused here, for every command, with
	// a message naming the minimum (exit 2: a deployment to fix, not an outage).
	if _, err := natsbus.Features(nc); err != nil {
		nc.Close()
		if errors.Is(err, natsbus.ErrServerTooOld) {
			return nil, usageError{fmt.Errorf("NATS %s: %w", c.URL, err)}
		}
		return nil, fmt.Errorf("%w: NATS %s: %v", errInfra, c.URL, err)
	}
	return nc, nil
}

func connectRedis(ctx context.Context, c config.RedisConfig) (redis.UniversalClient, error) {
	uo, err := c.UniversalOptions()
	if err != nil {
		return nil, err
	}
	uo.Dialer = pooledDialer(redis.NewDialer(&redis.Options{DialTimeout: uo.DialTimeout, TLSConfig: uo.TLSConfig}))
	rdb := redis.NewUniversalClient(uo)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("%w: Redis %s: %v", errInfra, c.URL, err)
	}
	return rdb, nil
}

// pooledDialer dials as go-redis does (dial) and keeps the connection's
// syscall.RawConn. go-redis peeks at every connection it takes from its pool
// (a non-blocking recvfrom) to drop one Redis has closed, and asks the
// connection for its RawConn each time: an allocation per command, which
// this makes one per connection. Without the peek a pool of connections
// closed by a Redis restart fails the next commands (TestRedisRestartWithAFullPoolLosesNoCommand).
func pooledDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			return c, nil // TLS: go-redis does not peek
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return c, nil
		}
		return rawConnCached{Conn: c, rc: rc}, nil
	}
}

// rawConnCached is a connection whose SyscallConn returns one RawConn made
// at dial time, valid for the connection's life.
type rawConnCached struct {
	net.Conn
	rc syscall.RawConn
}

func (c rawConnCached) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// applyMemoryLimit gives Go's collector the container's memory limit as its
// soft limit when GOMEMLIMIT is unset (the Kubernetes manifests set
// GOMEMLIMIT to the same figure; a plain `docker run -m` does not): near the
// limit the collector runs more often instead of letting the heap grow to
// twice the live heap (GOGC 100) past it and the container be killed. It
// returns the limit it set, 0 when it set none (GOMEMLIMIT set, or no limit).
func applyMemoryLimit(getenv func(string) string, read func(string) ([]byte, error)) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0 // the runtime read it at start
	}
	limit := cgroupMemoryLimit(read)
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	return limit
}

// cgroupMemoryLimit is the memory limit of the process's cgroup in bytes, 0
// when there is none ("max", v1's page-rounded "unlimited", no such file).
func cgroupMemoryLimit(read func(string) ([]byte, error)) int64 {
	// cgroup v2's memory.max, then cgroup v1's limit, both as a container
	// sees its own cgroup at the mount's root.
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := read(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0 // "max", or v1's unlimited (2^63 rounded down to a page)
		}
		return n
	}
	return 0
}

// activeHandlers bounds the handlers running at once (not parked between a
// run's steps) when maxWorkers is larger: a burst of 10,000 requests then
// starts 512 runs at a time, each with a goroutine and the stack its
// kick-off grows, rather than all of them (160 MB of stacks at once), and
// 2 cores do not go faster with more.
const activeHandlers = 512

func maxActive(maxWorkers int) int { return min(maxWorkers, activeHandlers) }
