package handlers

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// lazyAttrs is a slog.Handler that adds its attributes to next only once a
// record is handled. Each delivery's logger carries the request's
// attributes, then the run's (Handler.WithAttrs formats them at once, two
// times per delivery); most deliveries log little, and a delivery's loggers
// added attributes to are formatted once, together. By slog's contract a
// handler's attributes are the receiver's followed by WithAttrs's, so
// next.WithAttrs(a ++ b) logs what next.WithAttrs(a).WithAttrs(b) would.
type lazyAttrs struct {
	next  slog.Handler
	attrs []slog.Attr

	once sync.Once
	with slog.Handler // next.WithAttrs(attrs), made by the first record
}

// lazyLogger is base's logger with attrs, formatted on first use.
func lazyLogger(base *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&lazyAttrs{next: base.Handler(), attrs: attrs})
}

func (h *lazyAttrs) handler() slog.Handler {
	h.once.Do(func() { h.with = h.next.WithAttrs(h.attrs) })
	return h.with
}

// Enabled asks next: attributes do not change what a handler logs.
func (h *lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	return h.handler().Handle(ctx, r)
}

func (h *lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &lazyAttrs{next: h.next, attrs: slices.Concat(h.attrs, attrs)}
}

func (h *lazyAttrs) WithGroup(name string) slog.Handler {
	return h.handler().WithGroup(name)
}
