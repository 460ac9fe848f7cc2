package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/workers"
)

const (
	// maxFetchBatch caps one pull request, so that an idle replica with thousands of free
	// workers does not allocate thousand-slot buffers on every fetch. A burst is taken in
	// several back-to-back fetches, each returning as soon as it is full.
	maxFetchBatch = 256
	// minFetchBatch and fetchLinger: with fewer slots free than this (and
	// than a quarter of MaxActive), the fetch loop waits up to fetchLinger
	// for more to free up, rather than pulling one message per request.
	minFetchBatch = 16
	fetchLinger   = 2 * time.Millisecond
	// settleTimeout bounds a DoubleAck round trip.
	settleTimeout = 5 * time.Second
	// termReasonHandler and termReasonPanic are the reasons JetStream's MSG_TERMINATED advisory
	// carries (nats-server 2.10 and later; see ServerFeatures.TermReason).
	termReasonHandler = "rejected by handler"
	termReasonPanic   = "handler panicked"
	// Backoff between failed fetches (connection lost, consumer deleted, JetStream down).
	minRetryWait = 250 * time.Millisecond
	maxRetryWait = 10 * time.Second
	// workerIdle is how long a handler's worker waits for the next message
	// before it exits (between one and two of it).
	workerIdle = 2 * time.Second
)

// ConsumerConfig configures the durable pull consumer of SyncRequested messages. Zero fields take
// the defaults.
type ConsumerConfig struct {
	// Stream is the stream's name (default PATHLING_SYNC). It must exist: see EnsureStream.
	Stream string
	// Durable is the consumer's name, shared by all replicas (default pathling-sync).
	Durable string
	// FilterSubject selects the SyncRequested subjects (default pathling.sync.requested.>).
	FilterSubject string
	// AckWait is how long the server waits for an ack or an InProgress before redelivering
	// (default 60 s). InProgress is sent every AckWait/3 to AckWait/2 while a handler runs.
	AckWait time.Duration
	// MaxDeliver bounds deliveries per message (default -1: unlimited).
	MaxDeliver int
	// MaxAckPending bounds unacked messages across all replicas together (default -1:
	// unlimited; each replica is bounded by MaxWorkers anyway). The server's own default of
	// 1000 would silently cap the number of syncs running at once.
	MaxAckPending int
	// MaxWorkers is how many messages this replica handles at once (default 256), parked
	// ones included.
	MaxWorkers int
	// MaxActive is how many of them may be running at once rather than parked (handlers.Parked)
	// (default and at most MaxWorkers). A burst of requests then starts at most MaxActive
	// handlers together: each takes a goroutine and a stack until it parks.
	MaxActive int
	// FetchWait is how long one pull request waits for messages (default 5 s). A worker freed
	// during a pull request is used by the next one, so this is also the longest delay before a
	// freed worker takes a waiting message.
	FetchWait time.Duration
	// ShutdownGrace is how long Run waits for handlers after its context is cancelled
	// (default 5 s).
	ShutdownGrace time.Duration
	// Logger receives the consumer's logs (default: discarded).
	Logger *slog.Logger
}

func (c *ConsumerConfig) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStreamName
	}
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.FilterSubject == "" {
		c.FilterSubject = DefaultFilterSubject
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = -1
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = DefaultMaxWorkers
	}
	if c.MaxActive == 0 || c.MaxActive > c.MaxWorkers {
		c.MaxActive = c.MaxWorkers
	}
	if c.FetchWait == 0 {
		c.FetchWait = DefaultFetchWait
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *ConsumerConfig) validate() error {
	switch {
	case c.AckWait < 300*time.Millisecond:
		// InProgress goes out every AckWait/3: below this, heartbeats would flood the server.
		return fmt.Errorf("%w: ack wait %s is below 300ms", ErrInvalidConfig, c.AckWait)
	case c.MaxDeliver < -1:
		return fmt.Errorf("%w: max deliver %d", ErrInvalidConfig, c.MaxDeliver)
	case c.MaxAckPending < -1:
		return fmt.Errorf("%w: max ack pending %d", ErrInvalidConfig, c.MaxAckPending)
	case c.MaxWorkers < 1:
		return fmt.Errorf("%w: max workers %d", ErrInvalidConfig, c.MaxWorkers)
	case c.MaxActive < 1:
		return fmt.Errorf("%w: max active %d", ErrInvalidConfig, c.MaxActive)
	case c.MaxAckPending > 0 && c.MaxAckPending < c.MaxWorkers:
		return fmt.Errorf("%w: max ack pending %d is below max workers %d", ErrInvalidConfig, c.MaxAckPending, c.MaxWorkers)
	case c.FetchWait < 10*time.Millisecond:
		return fmt.Errorf("%w: fetch wait %s is below 10ms", ErrInvalidConfig, c.FetchWait)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("%w: negative shutdown grace", ErrInvalidConfig)
	}
	return nil
}

// Consumer runs a handler for each SyncRequested message of a durable pull consumer, at most
// MaxWorkers at once, keeping every message alive with InProgress() until its handler returns and
// then applying the handler's Disposition.
type Consumer struct {
	js     jetstream.JetStream
	cfg    ConsumerConfig
	handle handlers.HandlerFunc
	log    *slog.Logger

	running  atomic.Bool
	bound    atomic.Bool
	inFlight atomic.Int64
	// active counts the handlers running now: in flight, not parked.
	active atomic.Int64
	// freed gets a token (never blocking) each time a handler finishes, so that a fetch loop
	// with all workers busy sleeps until one is free instead of spinning.
	freed chan struct{}
	// beats keeps every running handler's message alive with InProgress.
	beats *heartbeats
	// workers run the handlers, at most MaxActive of them long-lived, so
	// that a message's handler starts on a stack grown by the ones before.
	workers *workers.Pool[job]
}

// job is a message for a worker: what work takes.
type job struct {
	ctx context.Context
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
	wg  *sync.WaitGroup
}

// NewConsumer checks cfg and returns a consumer that calls h for each message. It does not talk
// to the server: Run binds the consumer. Errors: ErrInvalidConfig.
func NewConsumer(js jetstream.JetStream, cfg ConsumerConfig, h handlers.HandlerFunc) (*Consumer, error) {
	if js == nil || h == nil {
		return nil, fmt.Errorf("%w: nil JetStream or handler", ErrInvalidConfig)
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Consumer{
		js:     js,
		cfg:    cfg,
		handle: h,
		log:    cfg.Logger.With("stream", cfg.Stream, "consumer", cfg.Durable),
		freed:  make(chan struct{}, 1),
		beats:  newHeartbeats(cfg.AckWait/3, cfg.Logger),
	}
	// MaxActive: no more handlers run at once, but a worker also settles
	// after its handler has given its active slot back, so a burst may
	// briefly need more; those run on goroutines of their own.
	c.workers = workers.New(cfg.MaxActive, workerIdle, func(j job) { c.work(j.ctx, j.msg, j.md, j.wg) })
	return c, nil
}

// Bound reports whether the consumer exists on the server, the fetch loop is running and its last
// pull request did not fail, and the NATS connection is up. It backs /readyz.
func (c *Consumer) Bound() bool {
	if !c.bound.Load() {
		return false
	}
	nc := c.js.Conn()
	return nc != nil && nc.IsConnected()
}

// InFlight is the number of handlers running now.
func (c *Consumer) InFlight() int { return int(c.inFlight.Load()) }

// Run binds the durable consumer (creating it at DeliverPolicy New the first time, otherwise
// updating its ack wait, max deliver, max ack pending and filter) and handles messages until ctx
// is done. Then it stops fetching and heartbeats at once, waits up to ShutdownGrace for the
// handlers (whose context is ctx, so they see the cancellation), and returns nil. Messages whose
// handlers have not settled them are redelivered by the server after AckWait.
//
// Errors: ErrServerTooOld for a nats-server below MinServerVersion; the binding error when the
// consumer cannot be created or updated at start
// (jetstream.ErrStreamNotFound when the stream is missing; ErrInvalidConfig when an existing
// consumer of that name is not a pull consumer with explicit acks). Later failures (lost
// connection, deleted consumer) are logged and retried with backoff while Bound reports false.
// Run may be called once at a time.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("natsbus: consumer is already running")
	}
	defer c.running.Store(false)

	if _, err := Features(c.js.Conn()); errors.Is(err, ErrServerTooOld) {
		return err
	}
	cons, err := c.bind(ctx)
	if err != nil {
		return err
	}
	c.bound.Store(true)
	var beating sync.WaitGroup
	beating.Go(func() { c.beats.run(ctx) })
	var handlersDone sync.WaitGroup
	c.fetchLoop(ctx, cons, &handlersDone)
	c.bound.Store(false)
	c.waitForHandlers(&handlersDone)
	beating.Wait()
	return nil
}

// waitForHandlers waits for the running handlers, at most ShutdownGrace.
func (c *Consumer) waitForHandlers(wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	grace := time.NewTimer(c.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		c.log.Warn("shutdown grace passed with handlers still running; their messages will be redelivered",
			"in_flight", c.InFlight(), "grace", c.cfg.ShutdownGrace)
	}
}

// bind creates the durable consumer at DeliverPolicy New, or updates the mutable settings of the
// existing one, keeping its position.
func (c *Consumer) bind(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = c.js.CreateConsumer(ctx, c.cfg.Stream, c.applyMutable(jetstream.ConsumerConfig{
			Durable:       c.cfg.Durable,
			DeliverPolicy: jetstream.DeliverNewPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
		}))
		if err == nil {
			c.log.Info("created consumer at new messages", "filter", c.cfg.FilterSubject)
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return nil, fmt.Errorf("natsbus: create consumer %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
		}
		// Another replica created it meanwhile, with other settings: update it below.
		cons, err = c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: look up consumer %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	}
	info := cons.CachedInfo()
	if info.Config.DeliverSubject != "" || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("%w: existing consumer %s/%s is not a pull consumer with explicit acks",
			ErrInvalidConfig, c.cfg.Stream, c.cfg.Durable)
	}
	want := c.applyMutable(info.Config)
	if mutableEqual(want, info.Config) {
		return cons, nil
	}
	cons, err = c.js.UpdateConsumer(ctx, c.cfg.Stream, want)
	if err != nil {
		return nil, fmt.Errorf("natsbus: update consumer %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	}
	c.log.Info("updated consumer settings", "filter", c.cfg.FilterSubject, "ack_wait", c.cfg.AckWait)
	return cons, nil
}

// applyMutable sets the settings this package owns and an existing consumer may change.
func (c *Consumer) applyMutable(cfg jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	cfg.FilterSubject = c.cfg.FilterSubject
	cfg.FilterSubjects = nil
	cfg.AckWait = c.cfg.AckWait
	cfg.MaxDeliver = c.cfg.MaxDeliver
	cfg.MaxAckPending = c.cfg.MaxAckPending
	cfg.BackOff = nil // BackOff would override AckWait for redeliveries
	return cfg
}

func mutableEqual(a, b jetstream.ConsumerConfig) bool {
	return a.FilterSubject == b.FilterSubject && len(b.FilterSubjects) == 0 &&
		a.AckWait == b.AckWait && a.MaxDeliver == b.MaxDeliver &&
		a.MaxAckPending == b.MaxAckPending && len(b.BackOff) == 0
}

// fetchLoop pulls messages while ctx lives, never asking for more than there are free workers.
func (c *Consumer) fetchLoop(ctx context.Context, cons jetstream.Consumer, wg *sync.WaitGroup) {
	retryWait := minRetryWait
	for ctx.Err() == nil {
		free := c.free()
		if free <= 0 {
			select {
			case <-c.freed:
			case <-ctx.Done():
			}
			continue
		}
		if free < minFetchBatch && free < c.cfg.MaxActive/4 {
			// Slots free up one by one under load: linger briefly for a few
			// more, so that each pull request is not for one message.
			c.linger(ctx, minFetchBatch)
			free = c.free()
		}
		err := c.fetch(ctx, cons, min(free, maxFetchBatch), wg)
		if err == nil {
			c.bound.Store(true)
			retryWait = minRetryWait
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.bound.Store(false)
		c.log.Warn("fetch failed; retrying", "error", err, "retry_in", retryWait)
		if !sleepCtx(ctx, retryWait) {
			return
		}
		retryWait = min(2*retryWait, maxRetryWait)
		// The consumer may have been deleted (or JetStream restarted without it): bind again.
		if rebound, err := c.bind(ctx); err != nil {
			c.log.Warn("rebinding consumer failed", "error", err)
		} else {
			cons = rebound
			c.bound.Store(true)
		}
	}
}

// free is how many more messages this replica may take now.
func (c *Consumer) free() int {
	return min(c.cfg.MaxWorkers-c.InFlight(), c.cfg.MaxActive-int(c.active.Load()))
}

// linger waits until want slots are free, at most fetchLinger.
func (c *Consumer) linger(ctx context.Context, want int) {
	t := time.NewTimer(fetchLinger)
	defer t.Stop()
	for c.free() < want {
		select {
		case <-c.freed:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// fetch sends one pull request for up to n messages and starts a handler for each message as it
// arrives. It returns nil when the request expired normally.
func (c *Consumer) fetch(ctx context.Context, cons jetstream.Consumer, n int, wg *sync.WaitGroup) error {
	// FetchContext (rather than FetchMaxWait) makes shutdown stop the pull at once; the server
	// expires the request slightly before this deadline.
	fetchCtx, cancel := context.WithTimeout(ctx, c.cfg.FetchWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fetchCtx))
	if err != nil {
		return err
	}
	for msg := range batch.Messages() {
		c.start(ctx, msg, wg)
	}
	err = batch.Error()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil // our own fetch wait ran out before the server's timeout reply arrived
	}
	return err
}

// start runs the handler for msg on a worker.
func (c *Consumer) start(ctx context.Context, msg jetstream.Msg, wg *sync.WaitGroup) {
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery (no ack subject): nothing can be acked either.
		c.log.Error("dropping message without JetStream metadata", "subject", msg.Subject(), "error", err)
		return
	}
	c.inFlight.Add(1)
	c.active.Add(1)
	wg.Add(1)
	c.workers.Go(job{ctx: ctx, msg: msg, md: md, wg: wg})
}

// work handles one message: heartbeat while the handler runs, then settle.
// A handler that returns Parked settles later through the delivery's Settle;
// the message keeps its heartbeats and its worker slot until then, while
// no goroutine waits for it here, and only its reply subject is kept (not
// its body and headers: 10,000 parked runs would hold 25 MB of them).
func (c *Consumer) work(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, wg *sync.WaitGroup) {
	d := handlers.Delivery{
		Subject:      msg.Subject(),
		Header:       msg.Headers(),
		Data:         msg.Data(),
		Stream:       md.Stream,
		StreamSeq:    md.Sequence.Stream,
		NumDelivered: md.NumDelivered,
		Published:    md.Timestamp,
	}
	f := &inflight{c: c, ctx: ctx, wg: wg, acks: replyAcks{nc: c.js.Conn(), subject: d.Subject, reply: msg.Reply()}, seq: d.StreamSeq}
	f.hb.msg = &f.acks
	c.beats.add(&f.hb)
	d.Settle = f.settle
	disp, termReason := c.call(ctx, d)
	c.active.Add(-1)
	if disp.Action == handlers.Parked {
		c.signalFreed() // an active slot, not the worker
		return          // settled (or to be) through d.Settle
	}
	f.done(disp, termReason)
}

// inflight is what the consumer keeps of a message from its start until it is settled, in one
// allocation (its heartbeat entry included).
type inflight struct {
	c    *Consumer
	ctx  context.Context
	wg   *sync.WaitGroup
	acks replyAcks
	seq  uint64 // stream sequence, for logs
	hb   heartbeat
	once atomic.Bool
}

// settle is the delivery's Settle, for a handler that parked it.
func (f *inflight) settle(disp handlers.Disposition) {
	if disp.Action == handlers.Parked {
		disp = handlers.Disposition{Action: handlers.Leave}
	}
	f.done(disp, termReasonHandler)
}

// done settles the message once, and frees its worker.
func (f *inflight) done(disp handlers.Disposition, termReason string) {
	c := f.c
	if !f.once.CompareAndSwap(false, true) {
		c.log.Error("delivery settled twice; ignoring the second", "action", disp.Action.String(),
			"subject", f.acks.Subject(), "stream_seq", f.seq)
		return
	}
	c.beats.stop(&f.hb)
	c.settle(f.ctx, settled{acks: &f.acks, seq: f.seq}, disp, termReason)
	c.inFlight.Add(-1)
	f.wg.Done()
	c.signalFreed()
}

// signalFreed wakes a fetch loop waiting for a free slot (never blocking).
func (c *Consumer) signalFreed() {
	select {
	case c.freed <- struct{}{}:
	default:
	}
}

// acks settle a message and keep it alive: a jetstream.Msg is one.
type acks interface {
	Subject() string
	InProgress() error
	DoubleAck(ctx context.Context) error
	NakWithDelay(delay time.Duration) error
	Term() error
	TermWithReason(reason string) error
}

// settled is what the consumer keeps of a message while its handler runs.
type settled struct {
	acks
	seq uint64 // stream sequence, for logs
}

// replyAcks are a message's acks through its reply subject alone, with the
// bodies jetstream.Msg sends, so that the message itself need not be kept.
type replyAcks struct {
	nc             *nats.Conn
	subject, reply string
}

var _ acks = replyAcks{}

func (a replyAcks) Subject() string   { return a.subject }
func (a replyAcks) InProgress() error { return a.nc.Publish(a.reply, []byte("+WPI")) }

// DoubleAck waits for the server's confirmation of the ack.
func (a replyAcks) DoubleAck(ctx context.Context) error {
	_, err := a.nc.RequestWithContext(ctx, a.reply, []byte("+ACK"))
	return err
}

// doubleAckWithin is DoubleAck under a timeout alone, as settle uses it, without a context (and
// its timer) per message: the request's timer comes from nats.go's pool. A timeout reads as
// DoubleAck's under a deadline does (context.DeadlineExceeded), for the log.
func (a replyAcks) doubleAckWithin(d time.Duration) error {
	_, err := a.nc.Request(a.reply, []byte("+ACK"), d)
	if errors.Is(err, nats.ErrTimeout) {
		return context.DeadlineExceeded
	}
	return err
}

// doubleAck acks with the server's confirmation within settleTimeout, whatever becomes of ctx.
func doubleAck(ctx context.Context, a acks) error {
	switch ra := a.(type) {
	case *replyAcks:
		return ra.doubleAckWithin(settleTimeout)
	case replyAcks:
		return ra.doubleAckWithin(settleTimeout)
	}
	ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	return a.DoubleAck(ackCtx)
}

func (a replyAcks) NakWithDelay(delay time.Duration) error {
	if delay > 0 {
		return a.nc.Publish(a.reply, fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds()))
	}
	return a.nc.Publish(a.reply, []byte("-NAK"))
}

func (a replyAcks) Term() error { return a.nc.Publish(a.reply, []byte("+TERM")) }

func (a replyAcks) TermWithReason(reason string) error {
	return a.nc.Publish(a.reply, []byte("+TERM "+reason))
}

// call runs the handler. A panic is a bug that would repeat on every redelivery and every
// replica, so it terminates the message instead of crashing the process or looping.
func (c *Consumer) call(ctx context.Context, d handlers.Delivery) (disp handlers.Disposition, termReason string) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("handler panicked; terminating message", "subject", d.Subject,
				"stream_seq", d.StreamSeq, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			disp, termReason = handlers.Disposition{Action: handlers.Term}, termReasonPanic
		}
	}()
	return c.handle(ctx, d), termReasonHandler
}

// settle applies the handler's disposition. Settling does not use ctx's cancellation: a handler
// that finished its work during shutdown still gets its message acked.
func (c *Consumer) settle(ctx context.Context, msg settled, disp handlers.Disposition, termReason string) {
	var err error
	switch disp.Action {
	case handlers.Ack:
		// DoubleAck waits for the server's confirmation: the caller has published the outcome
		// and only a confirmed ack prevents a redelivery.
		err = doubleAck(ctx, msg.acks)
	case handlers.Term:
		err = c.term(msg, termReason)
	case handlers.Nak:
		err = msg.NakWithDelay(disp.Delay)
	case handlers.Leave:
		return
	default:
		c.log.Error("unknown disposition; leaving message for redelivery", "action", disp.Action.String(),
			"subject", msg.Subject(), "stream_seq", msg.seq)
		return
	}
	if err != nil {
		c.log.Warn("settling message failed; the server will redeliver it", "action", disp.Action.String(),
			"subject", msg.Subject(), "stream_seq", msg.seq, "error", err)
	}
}

// term terminates msg, with reason where the server understands it. A server before 2.10 ignores
// "+TERM <reason>" altogether (the message would come back after every ack wait), and when the
// version is unknown (disconnected) the plain form is the one every server takes.
func (c *Consumer) term(msg acks, reason string) error {
	if f, err := Features(c.js.Conn()); err == nil && f.TermReason {
		return msg.TermWithReason(reason)
	}
	return msg.Term()
}

// heartbeats sends InProgress for every running handler's message at least every interval, from
// one goroutine (run) that wakes every half interval for all of them: 10,000 syncs in flight
// hold no timer each, and each message's beats stay at most 1.5 intervals (AckWait/2) apart.
type heartbeats struct {
	interval time.Duration
	log      *slog.Logger

	mu  sync.Mutex
	due map[*heartbeat]time.Time // next beat of each message
}

// heartbeat is one message's entry.
type heartbeat struct {
	msg     acks
	mu      sync.Mutex // held while sending, so that no InProgress goes out after stop
	stopped bool
}

func newHeartbeats(interval time.Duration, log *slog.Logger) *heartbeats {
	return &heartbeats{interval: interval, log: log, due: map[*heartbeat]time.Time{}}
}

// start registers msg: its first InProgress goes out about interval from now.
func (h *heartbeats) start(msg acks) *heartbeat {
	hb := &heartbeat{msg: msg}
	h.add(hb)
	return hb
}

// add registers hb (its msg set, never started before): its first InProgress goes out about
// interval from now.
func (h *heartbeats) add(hb *heartbeat) {
	h.mu.Lock()
	h.due[hb] = time.Now().Add(h.interval)
	h.mu.Unlock()
}

// stop ends hb's beats; no InProgress is sent for it after stop returns.
func (h *heartbeats) stop(hb *heartbeat) {
	hb.mu.Lock()
	hb.stopped = true
	hb.mu.Unlock()
	h.mu.Lock()
	delete(h.due, hb)
	h.mu.Unlock()
}

// run sends the beats that are due every half interval until ctx is done. On shutdown the beats
// stop: the handlers are being cancelled, and a handler that outlives the grace period must let
// its message fall back to the server for redelivery.
func (h *heartbeats) run(ctx context.Context) {
	t := time.NewTicker(h.interval / 2)
	defer t.Stop()
	var batch []*heartbeat
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			batch = h.takeDue(now, batch[:0])
			for _, hb := range batch {
				hb.mu.Lock()
				if !hb.stopped && ctx.Err() == nil {
					if err := hb.msg.InProgress(); err != nil {
						h.log.Warn("in-progress heartbeat failed", "subject", hb.msg.Subject(), "error", err)
					}
				}
				hb.mu.Unlock()
			}
			clear(batch) // hold no message past its handler
		}
	}
}

// takeDue appends the entries due at now to batch and schedules their next beats.
func (h *heartbeats) takeDue(now time.Time, batch []*heartbeat) []*heartbeat {
	h.mu.Lock()
	defer h.mu.Unlock()
	for hb, at := range h.due {
		if !now.Before(at) {
			batch = append(batch, hb)
			h.due[hb] = now.Add(h.interval)
		}
	}
	return batch
}

// sleepCtx waits d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
