package handlers

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
)

// A lazy logger writes what the loggers of slog.Logger.With would, in
// every use: the parent, a child with more attributes, groups, levels, and
// from several goroutines at once.
func TestLazyLoggerLogsAsWith(t *testing.T) {
	// No times: the two runs' lines are compared byte for byte.
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, opts) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, opts) },
	} {
		t.Run(name, func(t *testing.T) {
			use := func(log *slog.Logger) {
				log.Debug("not logged", "k", 1)
				log.Info("parent", "k", 1)
				child := log.With("token", int64(7), "run_id", "run-1")
				child.Warn("child", "k", 2)
				child.WithGroup("g").Info("grouped", "k", 3)
				child.With().Info("no attrs")
				log.Info("parent again")
			}
			var eager, lazy bytes.Buffer
			base := slog.New(newHandler(&eager)).With("service", "s")
			use(base.With("target", "t1", "request_id", "r1", "delivery", uint64(2)))
			base = slog.New(newHandler(&lazy)).With("service", "s")
			use(lazyLogger(base, slog.String("target", "t1"), slog.String("request_id", "r1"), slog.Uint64("delivery", 2)))
			if got, want := lazy.String(), eager.String(); got != want || want == "" {
				t.Errorf("lazy logger wrote\n%s\nWith wrote\n%s", got, want)
			}
		})
	}
	var out syncBuffer
	log := lazyLogger(slog.New(slog.NewJSONHandler(&out, nil)), slog.String("target", "t1"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { log.InfoContext(context.Background(), "concurrent") })
	}
	wg.Wait()
	if n := bytes.Count(out.bytes(), []byte(`"target":"t1"`)); n != 8 {
		t.Errorf("%d of 8 concurrent records carry the attribute", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
