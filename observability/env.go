package observability

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// ErrInvalidEnv is returned (wrapped) by Setup for an OTEL_* variable it
// cannot use.
var ErrInvalidEnv = errors.New("observability: invalid OTEL_* setting")

// Exporter names of OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER.
const (
	exporterOTLP       = "otlp"
	exporterConsole    = "console"
	exporterNone       = "none"
	exporterPrometheus = "prometheus"
)

// OTLP protocols of OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	protocolGRPC = "grpc"
	protocolHTTP = "http/protobuf"
)

// envList reads a comma-separated list variable, lower-cased and trimmed,
// empty entries dropped.
func envList(getenv func(string) string, key string) []string {
	var out []string
	for _, v := range strings.Split(getenv(key), ",") {
		if v = strings.ToLower(strings.TrimSpace(v)); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// traceExporters returns the span exporters OTEL_TRACES_EXPORTER asks for:
// "otlp", "console" or nothing ("none"). Unset, it is "otlp" when an OTLP
// endpoint is configured and "none" otherwise, so that a service without a
// collector does not log export failures forever (the specification's
// default is "otlp" regardless).
func traceExporters(getenv func(string) string) ([]string, error) {
	names := envList(getenv, "OTEL_TRACES_EXPORTER")
	if len(names) == 0 {
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			return []string{exporterOTLP}, nil
		}
		return nil, nil
	}
	var out []string
	for _, n := range names {
		switch n {
		case exporterNone:
		case exporterOTLP, exporterConsole:
			out = append(out, n)
		default:
			return nil, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q (want otlp, console or none)", ErrInvalidEnv, n)
		}
	}
	return out, nil
}

// metricExporters returns the push exporters OTEL_METRICS_EXPORTER asks for
// besides /metrics, which is always served: "otlp" or nothing. Unset means
// none (the Prometheus endpoint is the default way to read metrics).
func metricExporters(getenv func(string) string) ([]string, error) {
	var out []string
	for _, n := range envList(getenv, "OTEL_METRICS_EXPORTER") {
		switch n {
		case exporterNone, exporterPrometheus:
		case exporterOTLP:
			out = append(out, n)
		default:
			return nil, fmt.Errorf("%w: OTEL_METRICS_EXPORTER=%q (want prometheus, otlp or none)", ErrInvalidEnv, n)
		}
	}
	return out, nil
}

// otlpProtocol returns the OTLP protocol for signal ("TRACES", "METRICS"):
// OTEL_EXPORTER_OTLP_<signal>_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
// else http/protobuf (the specification's default).
func otlpProtocol(getenv func(string) string, signal string) (string, error) {
	p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"))
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch strings.ToLower(p) {
	case "", protocolHTTP:
		return protocolHTTP, nil
	case protocolGRPC:
		return protocolGRPC, nil
	}
	return "", fmt.Errorf("%w: OTLP protocol %q (want grpc or http/protobuf)", ErrInvalidEnv, p)
}

// sampler builds the sampler of OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on). The SDK reads
// these itself, but only from the process environment: reading them here
// honours Options.Getenv.
func sampler(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("%w: OTEL_TRACES_SAMPLER_ARG=%q (want a ratio in [0, 1])", ErrInvalidEnv, arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("%w: OTEL_TRACES_SAMPLER=%q (want always_on, always_off, traceidratio or their parentbased_ forms)", ErrInvalidEnv, name)
}

// resourceAttrs parses OTEL_RESOURCE_ATTRIBUTES (key=value pairs separated by
// commas, values percent-encoded) and OTEL_SERVICE_NAME, which wins over a
// service.name among the former.
func resourceAttrs(getenv func(string) string) ([]attribute.KeyValue, error) {
	var attrs []attribute.KeyValue
	for _, pair := range strings.Split(getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: OTEL_RESOURCE_ATTRIBUTES: %q is not key=value", ErrInvalidEnv, pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%w: OTEL_RESOURCE_ATTRIBUTES: value of %q: %v", ErrInvalidEnv, k, err)
		}
		attrs = append(attrs, attribute.String(k, val))
	}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		attrs = append(attrs, attribute.String("service.name", name))
	}
	return attrs, nil
}
