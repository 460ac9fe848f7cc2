package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestLogHandlerAddsTraceContext(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))).
		With("target", "main")
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()

	log.InfoContext(ctx, "with span", "run_id", "r1")
	log.Info("without span")
	log.DebugContext(ctx, "below the level")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 records, got:\n%s", buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext()
	if first[LogTraceID] != sc.TraceID().String() || first[LogSpanID] != sc.SpanID().String() {
		t.Errorf("record with a span: %v, want trace %s span %s", first, sc.TraceID(), sc.SpanID())
	}
	if first["target"] != "main" || first["run_id"] != "r1" {
		t.Errorf("attributes lost: %v", first)
	}
	if _, ok := second[LogTraceID]; ok {
		t.Errorf("record without a span has a trace id: %v", second)
	}
}
