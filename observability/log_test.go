package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

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

// A record with more attributes than a Record keeps inline keeps them all,
// and the record handed to the handler is not changed for the next one.
func TestLogHandlerManyAttributes(t *testing.T) {
	var buf bytes.Buffer
	h := NewLogHandler(slog.NewJSONHandler(&buf, nil))
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "many", 0)
	for i := range 7 {
		r.AddAttrs(slog.Int(fmt.Sprintf("a%d", i), i))
	}
	for range 2 {
		if err := h.Handle(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if r.NumAttrs() != 7 {
		t.Errorf("the caller's record has %d attributes, want 7", r.NumAttrs())
	}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		for i := range 7 {
			if got[fmt.Sprintf("a%d", i)] != float64(i) {
				t.Errorf("a%d lost: %s", i, line)
			}
		}
		if got[LogTraceID] != span.SpanContext().TraceID().String() || got[LogSpanID] != span.SpanContext().SpanID().String() {
			t.Errorf("ids: %s", line)
		}
	}
}
