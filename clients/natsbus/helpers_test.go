package natsbus

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// bus is a fresh JetStream server with the contract's stream.
type bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newBus(t testing.TB) *bus {
	t.Helper()
	s := testenv.NATS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := EnsureStream(context.Background(), js, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &bus{nc: nc, js: js, stream: st}
}

// request publishes a SyncRequested for target with ce-id id and returns its stream sequence.
func (b *bus) request(t testing.TB, target, id string) uint64 {
	t.Helper()
	env := messages.Envelope{ID: id, Source: "test", Type: messages.TypeRequested, Subject: target, Time: time.Now()}
	ack, err := PublishRequest(context.Background(), b.js, messages.Subjects{}.Requested(target), env, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func (b *bus) consumerInfo(t *testing.T, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), DefaultStreamName, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// running is a Consumer whose Run goroutine the test controls.
type running struct {
	*Consumer
	cancel context.CancelFunc
	done   chan error
}

// start runs a consumer until stop (or the test's end) and waits until it is bound.
func (b *bus) start(t *testing.T, cfg ConsumerConfig, h handlers.HandlerFunc) *running {
	t.Helper()
	if cfg.FetchWait == 0 {
		cfg.FetchWait = 250 * time.Millisecond
	}
	c, err := NewConsumer(b.js, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Consumer: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	testenv.Eventually(t, 5*time.Second, c.Bound, "consumer bound")
	return r
}

// stop cancels Run and returns how long it took to return.
func (r *running) stop(t *testing.T) time.Duration {
	t.Helper()
	begin := time.Now()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancellation")
	}
	return time.Since(begin)
}

// delivery is what a recording handler saw.
type delivery struct {
	handlers.Delivery
	at time.Time
}

// recorder records deliveries and answers with decide.
type recorder struct {
	mu     sync.Mutex
	seen   []delivery
	decide func(ctx context.Context, d handlers.Delivery) handlers.Disposition
}

func (r *recorder) handle(ctx context.Context, d handlers.Delivery) handlers.Disposition {
	r.mu.Lock()
	r.seen = append(r.seen, delivery{Delivery: d, at: time.Now()})
	r.mu.Unlock()
	if r.decide == nil {
		return handlers.Disposition{Action: handlers.Ack}
	}
	return r.decide(ctx, d)
}

func (r *recorder) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.seen...)
}

func (r *recorder) count() int { return len(r.deliveries()) }

// consistently checks cond repeatedly for d and fails the test the first time it is false.
func consistently(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("condition broken: %s", msg)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			return
		}
	}
}
