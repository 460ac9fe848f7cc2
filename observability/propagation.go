package observability

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
)

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// HeaderCarrier carries trace context in NATS message headers (nats.Header, or the
// map[string][]string of a handlers.Delivery). Unlike OTel's HeaderCarrier over http.Header, it
// never canonicalises keys: NATS headers are case-sensitive, and the contract's header is
// lowercase "traceparent", not "Traceparent".
type HeaderCarrier map[string][]string

// Get returns the first value of key. The key is matched exactly first; failing that,
// case-insensitively (so a "Traceparent" written by an HTTP-style carrier is still read), taking
// the smallest matching key so that the result does not depend on map order.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	var found string
	var value string
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) && (found == "" || k < found) {
			found, value = k, v[0]
		}
	}
	return value
}

// Set replaces the values of key with value, with key spelled exactly as given.
func (c HeaderCarrier) Set(key, value string) {
	c[key] = []string{value}
}

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into h with propagator p (e.g. propagation.TraceContext{},
// which writes "traceparent" and "tracestate"). A nil h or p does nothing.
func Inject(ctx context.Context, p propagation.TextMapPropagator, h map[string][]string) {
	if p == nil || h == nil {
		return
	}
	p.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx extended with the trace context propagator p reads from h (the remote span
// context becomes the parent of spans started from the result). A nil h or p returns ctx.
func Extract(ctx context.Context, p propagation.TextMapPropagator, h map[string][]string) context.Context {
	if p == nil || h == nil {
		return ctx
	}
	return p.Extract(ctx, HeaderCarrier(h))
}
