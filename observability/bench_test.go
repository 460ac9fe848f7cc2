package observability

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// The hot path of observability per sync, as the throughput flood runs it
// (no span exporter: spans carry ids only). Compare with
// go test -run '^$' -bench . -benchmem -count 6 ./observability/

func benchTelemetry(b *testing.B) *Telemetry {
	b.Helper()
	tel, err := Setup(context.Background(), Options{ServiceVersion: "bench", Getenv: envFrom(nil), Targets: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func benchMetrics(b *testing.B, tel *Telemetry) *Metrics {
	b.Helper()
	m, err := NewMetrics(tel.MeterProvider(), MetricsConfig{Targets: []string{"main"}})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkMetricsSync is one fast sync's Metrics calls: the run events of a
// job done at its first poll and its three Pathling requests (kick-off, the
// status poll, the DELETE).
func BenchmarkMetricsSync(b *testing.B) {
	m := benchMetrics(b, benchTelemetry(b))
	ctx := context.Background()
	ev := func(kind string) handlers.RunEvent {
		return handlers.RunEvent{Kind: kind, Target: "main", RequestID: "req-1", RunID: "run-1"}
	}
	started, kickedOff, skew, polled, watermark, finished, stopped :=
		ev(handlers.EventStarted), ev(handlers.EventKickedOff), ev(handlers.EventClockSkew), ev(handlers.EventPolled),
		ev(handlers.EventWatermark), ev(handlers.EventFinished), ev(handlers.EventStopped)
	skew.ClockSkew = time.Second
	polled.Status = handlers.JobStatus{State: handlers.JobDone}
	polled.Polls = 1
	watermark.Watermark = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	finished.Completed, finished.Duration, finished.Polls, finished.DetectionLag = true, 30*time.Millisecond, 1, time.Millisecond
	b.ReportAllocs()
	for b.Loop() {
		m.RunEvent(ctx, started)
		m.RunEvent(ctx, kickedOff)
		m.PathlingRequest(ctx, "main", KindKickOff, http.StatusAccepted, 2*time.Millisecond)
		m.RunEvent(ctx, skew)
		m.PathlingRequest(ctx, "main", KindPoll, http.StatusOK, time.Millisecond)
		m.RunEvent(ctx, skew)
		m.RunEvent(ctx, polled)
		m.RunEvent(ctx, watermark)
		m.RunEvent(ctx, finished)
		m.PathlingRequest(ctx, "main", KindDelete, http.StatusOK, time.Millisecond)
		m.RunEvent(ctx, stopped)
	}
}

// stubTransport answers every request at once, so that a benchmark sees the
// wrapping transports' own cost.
type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("traceparent") == "" && r.Header.Get("Traceparent") == "" {
		panic("no traceparent")
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}

// BenchmarkTransportRoundTrip is one Pathling request through NewTransport's
// wrapping (span ids, traceparent, metrics), over a stub base transport and
// over a real connection to an httptest server on 127.0.0.1; "recorded" is
// the otelhttp path of an SDK tracer provider that samples (no exporter).
func BenchmarkTransportRoundTrip(b *testing.B) {
	tel := benchTelemetry(b)
	m := benchMetrics(b, tel)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	sdk := sdktrace.NewTracerProvider()
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	for _, c := range []struct {
		name string
		base http.RoundTripper
		tp   trace.TracerProvider
		url  string
	}{
		{"stub", stubTransport{}, tel.TracerProvider(), "http://pathling.test/fhir/$job?id=1"},
		{"httptest", srv.Client().Transport, tel.TracerProvider(), srv.URL + "/fhir/$job?id=1"},
		{"recorded-stub", stubTransport{}, sdk, "http://pathling.test/fhir/$job?id=1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			rt := NewTransport(c.base, TransportConfig{Target: "main", Metrics: m, TracerProvider: c.tp,
				SpanAttributes: []attribute.KeyValue{handlers.AttrTarget.String("main")}})
			ctx, span := tel.TracerProvider().Tracer("b").Start(context.Background(), "poll")
			defer span.End()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Accept", "application/fhir+json")
			req.Header.Set("Authorization", "Bearer x")
			b.ReportAllocs()
			for b.Loop() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkLogHandler is one info line, logged with a span's context,
// through LogHandler over the JSON handler (the default format).
func BenchmarkLogHandler(b *testing.B) {
	tel := benchTelemetry(b)
	log := slog.New(NewLogHandler(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))).
		With("target", "main")
	ctx, span := tel.TracerProvider().Tracer("b").Start(context.Background(), "process")
	defer span.End()
	b.ReportAllocs()
	for b.Loop() {
		log.InfoContext(ctx, "sync completed", "request_id", "req-1", "run_id", "run-1", "polls", 1)
	}
}

// BenchmarkIDTracerStart is one span start and end with no exporter (ids
// only), as the handlers start theirs: a child with attributes, and a root.
func BenchmarkIDTracerStart(b *testing.B) {
	tr := benchTelemetry(b).TracerProvider().Tracer("b")
	parent, span := tr.Start(context.Background(), "process")
	defer span.End()
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"child", parent}, {"root", context.Background()}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, s := tr.Start(c.ctx, "poll", trace.WithAttributes(
					handlers.AttrTarget.String("main"), handlers.AttrRunID.String("run-1")))
				s.End()
			}
		})
	}
}
