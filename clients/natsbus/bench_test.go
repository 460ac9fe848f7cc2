package natsbus

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// benchBus is an embedded JetStream server with the contract's stream.
func benchBus(b *testing.B) jetstream.JetStream {
	b.Helper()
	_, js := testenv.NATS(b).Connect(b)
	if _, err := EnsureStream(context.Background(), js, StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	return js
}

var benchBody = []byte(`{"concurrency":"queue","saveMode":"merge","types":["Patient","Observation"]}`)

// BenchmarkConsumerAck is the consumer's per-message path: fetch, start,
// heartbeat registration, a handler that acks at once, DoubleAck. The
// messages are published before the timer starts.
func BenchmarkConsumerAck(b *testing.B) {
	benchConsumer(b, func(*testing.B, jetstream.JetStream) handlers.HandlerFunc {
		return func(context.Context, handlers.Delivery) handlers.Disposition {
			return handlers.Disposition{Action: handlers.Ack}
		}
	})
}

// BenchmarkConsumerRefuse is the consumer's per-message path with a
// handler that does what a refusal does (decode the request, publish an
// outcome with the stream's ack, ack): the handler's goroutine grows its
// stack decoding JSON and in the publish round trip.
func BenchmarkConsumerRefuse(b *testing.B) {
	benchConsumer(b, func(b *testing.B, js jetstream.JetStream) handlers.HandlerFunc {
		p, err := NewPublisher(js.Conn())
		if err != nil {
			b.Fatal(err)
		}
		body := []byte(`{"requestId":"0193a1f2-7c1e-7b8a-9f3e-2b1c4d5e6f70","target":"t1","reason":"busy","saveMode":"merge","types":["Patient","Observation"]}`)
		return func(ctx context.Context, d handlers.Delivery) handlers.Disposition {
			if _, err := messages.DecodeRequested(d.Data); err != nil {
				b.Error(err)
			}
			e := handlers.Event{
				Subject: messages.Subjects{}.Failed("t1"),
				Envelope: messages.Envelope{ID: fmt.Sprintf("r%d/failed", d.StreamSeq), Source: "pathling-sync",
					Type: messages.TypeFailed, Subject: "t1", Time: time.Now()},
				Body: body,
			}
			if err := p.Publish(ctx, e); err != nil {
				b.Error(err)
			}
			return handlers.Disposition{Action: handlers.Ack}
		}
	})
}

// benchConsumer runs b.N messages, published before the timer starts,
// through a consumer with the handler h returns.
func benchConsumer(b *testing.B, h func(*testing.B, jetstream.JetStream) handlers.HandlerFunc) {
	js := benchBus(b)
	ctx := context.Background()
	for i := range b.N {
		env := messages.Envelope{ID: fmt.Sprintf("r%d", i), Source: "bench", Type: messages.TypeRequested, Subject: "t1", Time: time.Now()}
		msg := nats.NewMsg(messages.Subjects{}.Requested("t1"))
		env.WriteTo(msg.Header)
		msg.Data = benchBody
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(env.ID)); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 || i == b.N-1 { // below the async publisher's stall limit
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing timed out")
			}
		}
	}
	var handled atomic.Int64
	done := make(chan struct{})
	n := int64(b.N)
	handle := h(b, js)
	c, err := NewConsumer(js, ConsumerConfig{FetchWait: time.Second}, func(ctx context.Context, d handlers.Delivery) handlers.Disposition {
		disp := handle(ctx, d)
		if handled.Add(1) == n {
			close(done)
		}
		return disp
	})
	if err != nil {
		b.Fatal(err)
	}
	// DeliverPolicy New would skip what is already stored: create the
	// consumer at the start of the stream first; Run then only binds it.
	if _, err := js.CreateConsumer(ctx, DefaultStreamName, c.applyMutable(jetstream.ConsumerConfig{
		Durable: DefaultDurable, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
	})); err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { ran <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("handled %d of %d", handled.Load(), n)
	}
	b.StopTimer()
	cancel()
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublish is one outcome through Publisher.Publish, with the
// stream's ack.
func BenchmarkPublish(b *testing.B) {
	js := benchBus(b)
	p, err := NewPublisher(js.Conn())
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"requestId":"0193a1f2-7c1e-7b8a-9f3e-2b1c4d5e6f70","runId":"0193a1f2-7c1e-7b8a-9f3e-2b1c4d5e6f71","target":"t00001","exportUrl":"http://127.0.0.1:40000/source/fhir","saveMode":"merge","types":["Patient","Observation"],"pathlingJob":"http://127.0.0.1:40000/t/t00001/fhir/$job?id=12345","outputs":1,"empty":false}`)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		id := fmt.Sprintf("0193a1f2-7c1e-7b8a-9f3e-%012d/completed", i)
		e := handlers.Event{
			Subject: messages.Subjects{}.Completed("t00001"),
			Envelope: messages.Envelope{ID: id, Source: "pathling-sync", Type: messages.TypeCompleted, Subject: "t00001",
				Time: time.Now(), TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			Body: body,
		}
		if err := p.Publish(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}
