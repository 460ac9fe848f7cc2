package observability

import (
	"context"
	"encoding/hex"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys of the trace context.
const (
	LogTraceID = "trace_id"
	LogSpanID  = "span_id"
)

// LogHandler is a slog.Handler that adds trace_id and span_id to every
// record logged with a context holding a valid span (the ...Context logging
// methods), so that logs and traces join up.
type LogHandler struct {
	next slog.Handler
}

var _ slog.Handler = LogHandler{}

// NewLogHandler wraps next. The ids are added as the record's own
// attributes: under a group opened with WithGroup they land in that group.
func NewLogHandler(next slog.Handler) LogHandler { return LogHandler{next: next} }

// Enabled reports whether next handles level.
func (h LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the trace context of ctx, if any, and passes r on.
func (h LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		// Both ids in hex (as TraceID.String and SpanID.String) in one
		// string: one allocation instead of two.
		tid, sid := sc.TraceID(), sc.SpanID()
		var buf [2*len(tid) + 2*len(sid)]byte
		hex.Encode(buf[:2*len(tid)], tid[:])
		hex.Encode(buf[2*len(tid):], sid[:])
		ids := string(buf[:])
		r = r.Clone() // AddAttrs must not append to the caller's attributes
		r.AddAttrs(slog.String(LogTraceID, ids[:2*len(tid)]), slog.String(LogSpanID, ids[2*len(tid):]))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a LogHandler over next.WithAttrs(attrs).
func (h LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return LogHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a LogHandler over next.WithGroup(name).
func (h LogHandler) WithGroup(name string) slog.Handler {
	return LogHandler{next: h.next.WithGroup(name)}
}
