package handlers_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// BenchmarkFastSync is one fast sync (kick-off, one poll that sees the job
// done, outcome) per op through a Syncer driven by a real consumer: embedded
// NATS, a real redis-server and the Pathling emulator, in this process.
// allocs/op counts every goroutine of the process (the servers too): a
// before/after figure, not the service's alone.
//
// Spans are no-op ones or recorded by the OTel SDK (sampled, no exporter);
// the log is JSON at info level, discarded.
func BenchmarkFastSync(b *testing.B) {
	b.Run("noop", func(b *testing.B) { benchFastSync(b, nil) })
	b.Run("sdk", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		benchFastSync(b, tp)
	})
}

func benchFastSync(b *testing.B, tp trace.TracerProvider) {
	e := newEnv(b, envOptions{})
	targets := make([]handlers.Target, 4)
	for i := range targets {
		targets[i] = e.target(func(t *handlers.Target) {
			t.Name = "t" + strconv.Itoa(i+1)
			t.PollPolicy = handlers.PollSeed
			t.Poll = handlers.Backoff{Initial: time.Millisecond, Factor: 1, Max: time.Millisecond}
		})
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	e.start(e.js, e.syncer(syncerOptions{tp: tp, log: log}, targets...), 0)

	// Outcomes by core subscription: the test's outcome log polls.
	done := make(chan *nats.Msg, 16)
	sub, err := e.nc.ChanSubscribe(e.subjects.Prefix+".>", done)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	run := func(prefix string, i int) {
		target := targets[i%len(targets)].Name
		id := prefix + strconv.Itoa(i)
		e.request(target, id, `{}`)
		want := messages.CompletedID(id)
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-done:
				if m.Header.Get(messages.HeaderID) == want {
					return
				}
				if m.Header.Get(messages.HeaderID) == messages.FailedID(id) {
					b.Fatalf("%s failed: %s", id, m.Data)
				}
			case <-timeout:
				b.Fatalf("no outcome of %s", id)
			}
		}
	}
	for i := range 8 { // warm up: connections, pools, the targets' first runs
		run("warm-", i)
	}
	b.ResetTimer()
	cpu0 := processCPU(b)
	for i := 0; i < b.N; i++ {
		run("bench-", i)
	}
	// The process's CPU time (all goroutines, the servers' too): ns/op is
	// mostly waiting.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time, user and system, this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var sinkString string

func BenchmarkWatermarkKey(b *testing.B) {
	p := handlers.ImportParams{ExportURL: "http://source.test/fhir", SaveMode: "merge",
		Types: []string{"Observation", "Patient"}, TypeFilters: []string{"Patient?active=true"}}
	b.Run("empty", func(b *testing.B) {
		q := handlers.ImportParams{ExportURL: p.ExportURL}
		for b.Loop() {
			sinkString = handlers.WatermarkKey(q)
		}
	})
	b.Run("types", func(b *testing.B) {
		for b.Loop() {
			sinkString = handlers.WatermarkKey(p)
		}
	})
	b.Run("unsorted", func(b *testing.B) {
		q := p
		q.Types = []string{"Patient", "Observation"}
		for b.Loop() {
			sinkString = handlers.WatermarkKey(q)
		}
	})
}

func BenchmarkDurationShape(b *testing.B) {
	b.Run("empty", func(b *testing.B) {
		for b.Loop() {
			sinkString = handlers.DurationShape(handlers.ImportParams{})
		}
	})
	b.Run("types", func(b *testing.B) {
		p := handlers.ImportParams{Types: []string{"Patient", "Observation"}}
		for b.Loop() {
			sinkString = handlers.DurationShape(p)
		}
	})
	b.Run("sorted", func(b *testing.B) {
		p := handlers.ImportParams{Types: []string{"Observation", "Patient"}}
		for b.Loop() {
			sinkString = handlers.DurationShape(p)
		}
	})
}
