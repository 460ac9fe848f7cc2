package handlers

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// benchTracers are the tracers the span benchmarks run with: no-op, and the
// SDK's sampling every span (no exporter).
func benchTracers(b *testing.B) map[string]trace.Tracer {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return map[string]trace.Tracer{"noop": noop.NewTracerProvider().Tracer(TracerName), "sdk": tp.Tracer(TracerName)}
}

// BenchmarkOutcomeBuild is a completed run's outcome event: its producer
// span, envelope (traceparent) and body.
func BenchmarkOutcomeBuild(b *testing.B) {
	started := time.Date(2026, 1, 15, 2, 0, 0, 0, time.UTC)
	run := &Run{RunID: "0b9c2f4e-7d1a-4c55-9a43-0d4c1f6b2e11", RequestID: "req-123456", Target: "t1",
		Request: messages.SyncRequested{SaveMode: "merge"}, Attempts: 1, Polls: 1, StartedAt: started,
		Params: ImportParams{ExportURL: "http://source.test/fhir", SaveMode: "merge"}}
	res := completion("http://p/fhir/$job?id=1", JobStatus{Outputs: 4, TransactionTime: "2026-01-15T02:00:01Z"}, false, "2026-01-15T01:58:00Z")
	for name, tr := range benchTracers(b) {
		b.Run(name, func(b *testing.B) {
			subjects := messages.Subjects{Prefix: messages.DefaultSubjectPrefix}
			o := &outcomes{subjects: subjects, source: "pathling-sync",
				clock: clock.Or(nil), prop: propagation.TraceContext{}, tracer: tr,
				names: map[string]*targetNames{"t1": newTargetNames(subjects, "t1")}}
			ctx, parent := tr.Start(context.Background(), "parent")
			defer parent.End()
			for b.Loop() {
				_, span, err := o.build(ctx, runEcho(run), res, started.Add(time.Second))
				if err != nil {
					b.Fatal(err)
				}
				span.End()
			}
		})
	}
}

// BenchmarkStartConsume is a delivery's consumer span.
func BenchmarkStartConsume(b *testing.B) {
	h := natsHeader{}
	messages.Envelope{ID: "req-123456", Source: "test", Type: messages.TypeRequested, Subject: "t1",
		ContentType: messages.ContentTypeJSON, Time: time.Now().UTC()}.WriteTo(h)
	d := Delivery{Subject: "pathling.sync.requested.t1", Header: h, Data: []byte(`{}`), Stream: "PATHLING_SYNC", StreamSeq: 7, NumDelivered: 1}
	in := intake{requestID: "req-123456", target: "t1"}
	for name, tr := range benchTracers(b) {
		b.Run(name, func(b *testing.B) {
			s := &Syncer{deps: deps{tracer: tr, outcomes: &outcomes{names: map[string]*targetNames{
				"t1": newTargetNames(messages.Subjects{Prefix: messages.DefaultSubjectPrefix}, "t1")}}},
				consumerGroup: "pathling-sync"}
			for b.Loop() {
				// The envelope as Handle reads it (once, for intake and span).
				env, ok := messages.ReadEnvelope(h)
				_, span := s.startConsume(context.Background(), d, env, ok, in)
				span.End()
			}
		})
	}
}
