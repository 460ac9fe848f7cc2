package observability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options configures Setup.
type Options struct {
	// ServiceName is the resource's service.name (default "pathling-sync");
	// OTEL_SERVICE_NAME and a service.name in OTEL_RESOURCE_ATTRIBUTES
	// override it.
	ServiceName string
	// ServiceVersion is service.version.
	ServiceVersion string
	// InstanceID is service.instance.id (this replica), when not empty.
	InstanceID string
	// Getenv reads the OTEL_* variables that select exporters, protocols,
	// sampler and resource (default os.Getenv). The OTLP exporters read
	// their own settings (endpoint, headers, TLS, timeout) from the process
	// environment.
	Getenv func(string) string
	// Logger receives the SDK's export errors (default: discarded).
	Logger *slog.Logger
	// Stdout is where the console span exporter writes (default os.Stdout).
	Stdout io.Writer
	// Targets is how many targets are configured. Each instrument may keep
	// SeriesPerTarget series per target on top of the SDK's default 2,000,
	// so that no target's series fold into the SDK's overflow series. Memory
	// grows only with the series that are used.
	Targets int
}

// SeriesPerTarget bounds one instrument's series per target (outcomes by
// reason, Pathling requests by kind and status, …) for the cardinality limit.
const SeriesPerTarget = 64

// defaultSeriesLimit is the SDK's own cardinality limit per instrument.
const defaultSeriesLimit = 2000

// Telemetry holds the tracer and meter providers of the process and the
// Prometheus registry behind /metrics.
type Telemetry struct {
	tracerProvider trace.TracerProvider
	sdkTracer      *sdktrace.TracerProvider // nil when tracing is disabled
	meterProvider  *sdkmetric.MeterProvider
	registry       *prometheus.Registry
	handler        http.Handler

	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the providers from the standard OTEL_* variables:
//
//   - traces: OTEL_TRACES_EXPORTER otlp, console or none (unset: otlp when
//     OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
//     set, else none); OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL grpc or
//     http/protobuf (default); OTEL_TRACES_SAMPLER[_ARG] (default
//     parentbased_always_on). Spans are made even with no exporter, so that
//     logs and published events carry trace ids; they are then not
//     recorded (ids and the sampler's decision only: idtracer.go).
//     OTEL_SDK_DISABLED=true turns tracing off (trace context is still
//     passed on).
//   - metrics: always a Prometheus registry of its own (MetricsHandler, with
//     the Go runtime and process collectors); OTEL_METRICS_EXPORTER=otlp
//     also pushes them over OTLP (OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL,
//     OTEL_METRIC_EXPORT_INTERVAL).
//   - resource: service.name, service.version, service.instance.id, then
//     OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
//
// It sets one global: OpenTelemetry's error handler, which is the only way
// to route the SDK's export errors (otherwise printed unstructured on
// stderr through the standard log package) to Options.Logger. No global
// tracer provider, meter provider or propagator is set.
//
// Errors: ErrInvalidEnv (wrapped) for an unusable variable; exporter
// construction errors. Shutdown must be called to flush.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if o.ServiceName == "" {
		o.ServiceName = "pathling-sync"
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Logger != nil {
		log := o.Logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("telemetry export failed", "error", err)
		}))
	}
	res, err := newResource(ctx, o, getenv)
	if err != nil {
		return nil, err
	}
	t := &Telemetry{}
	ok := false
	defer func() {
		if !ok {
			_ = t.Shutdown(context.WithoutCancel(ctx))
		}
	}()

	var spanExporters []string
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		t.tracerProvider = noop.NewTracerProvider()
	} else {
		smp, err := sampler(getenv)
		if err != nil {
			return nil, err
		}
		names, err := traceExporters(getenv)
		if err != nil {
			return nil, err
		}
		spanExporters = names
		if len(names) == 0 {
			t.tracerProvider = newIDTracerProvider(smp, true) // sampler()'s samplers read only the parent
		}
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(smp)}
		for _, n := range names {
			exp, err := newSpanExporter(ctx, n, getenv, o.Stdout)
			if err != nil {
				return nil, err
			}
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
		if len(names) > 0 {
			t.sdkTracer = sdktrace.NewTracerProvider(opts...)
			t.tracerProvider = t.sdkTracer
		}
	}

	t.registry = prometheus.NewRegistry()
	t.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	promExp, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("observability: prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp),
		sdkmetric.WithCardinalityLimit(defaultSeriesLimit + max(o.Targets, 0)*SeriesPerTarget)}
	pushers, err := metricExporters(getenv)
	if err != nil {
		return nil, err
	}
	for range pushers { // only "otlp"
		exp, err := newMetricExporter(ctx, getenv)
		if err != nil {
			return nil, err
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	if !exemplarsUseful(spanExporters, pushers, getenv) {
		mopts = append(mopts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	t.meterProvider = sdkmetric.NewMeterProvider(mopts...)
	t.handler = promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorLog: promLogger{o.Logger}})
	ok = true
	return t, nil
}

// exemplarsUseful reports whether metrics should carry exemplars (the trace
// of a measurement): only when spans are exported (otherwise the trace ids
// name traces nobody keeps) and metrics are pushed over OTLP (/metrics
// serves the Prometheus text format, which has no exemplars), or when
// OTEL_METRICS_EXEMPLAR_FILTER says so (the SDK then reads it). Without
// them, no series keeps an exemplar reservoir: 16 MB with 10,000 targets.
func exemplarsUseful(spanExporters, metricPushers []string, getenv func(string) string) bool {
	if strings.TrimSpace(getenv("OTEL_METRICS_EXEMPLAR_FILTER")) != "" {
		return true
	}
	return len(spanExporters) > 0 && len(metricPushers) > 0
}

func newResource(ctx context.Context, o Options, getenv func(string) string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(o.ServiceName)}
	if o.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(o.ServiceVersion))
	}
	if o.InstanceID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(o.InstanceID))
	}
	fromEnv, err := resourceAttrs(getenv)
	if err != nil {
		return nil, err
	}
	// Later attributes win: the environment overrides the defaults.
	attrs = append(attrs, fromEnv...)
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
	)
	if err != nil {
		return nil, fmt.Errorf("observability: resource: %w", err)
	}
	return res, nil
}

func newSpanExporter(ctx context.Context, name string, getenv func(string) string, stdout io.Writer) (sdktrace.SpanExporter, error) {
	if name == exporterConsole {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(stdout))
		if err != nil {
			return nil, fmt.Errorf("observability: console span exporter: %w", err)
		}
		return exp, nil
	}
	proto, err := otlpProtocol(getenv, "TRACES")
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if proto == protocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("observability: OTLP span exporter (%s): %w", proto, err)
	}
	return exp, nil
}

func newMetricExporter(ctx context.Context, getenv func(string) string) (sdkmetric.Exporter, error) {
	proto, err := otlpProtocol(getenv, "METRICS")
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if proto == protocolGRPC {
		exp, err = otlpmetricgrpc.New(ctx)
	} else {
		exp, err = otlpmetrichttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("observability: OTLP metric exporter (%s): %w", proto, err)
	}
	return exp, nil
}

// TracerProvider returns the provider spans are made with.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracerProvider }

// MeterProvider returns the provider instruments are made with.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meterProvider }

// MetricsHandler serves the metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler { return t.handler }

// Shutdown flushes pending spans and metrics and stops the exporters, within
// ctx's deadline. Later calls return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.sdkTracer != nil {
			if err := t.sdkTracer.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("traces: %w", err))
			}
		}
		if t.meterProvider != nil {
			if err := t.meterProvider.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("metrics: %w", err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.shutdownErr = fmt.Errorf("observability: shutdown: %w", err)
		}
	})
	return t.shutdownErr
}

// promLogger passes promhttp's errors (a failed scrape) to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	if l.log != nil {
		l.log.Warn("metrics scrape", "error", fmt.Sprint(v...))
	}
}
