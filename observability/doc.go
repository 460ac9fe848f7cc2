// Package observability is pathling-sync's telemetry: OpenTelemetry traces
// and metrics configured by the standard OTEL_* environment variables, the
// Prometheus /metrics handler, the run metrics recorder (a handlers.Observer),
// an instrumented HTTP transport for Pathling requests, a slog handler that
// stamps log records with trace and span ids, and trace context over NATS
// headers.
//
// Nothing here is global: Setup returns a Telemetry whose providers cmd
// passes to the packages that make spans and measurements (handlers gets a
// trace.TracerProvider, the HTTP transport a TracerProvider and a *Metrics).
// The one exception is the OpenTelemetry error handler, see Setup.
package observability
