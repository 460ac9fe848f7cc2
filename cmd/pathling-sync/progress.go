package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// Live progress of `request --wait`: the run record in Redis says what the
// service is doing (phase, polls, Pathling's X-Progress); this file turns it
// into one line rewritten in place on a terminal, or into plain lines, one
// per change, when the output goes to a file (cron's log).

// progressInterval is how often the run record is read while waiting.
const progressInterval = time.Second

// plainHeartbeat is how often an unchanged plain line is repeated, so that a
// log shows the wait is alive.
const plainHeartbeat = 15 * time.Second

// runLoader reads a run record; *redisstore.Store is one.
type runLoader interface {
	LoadRun(ctx context.Context, target, requestID string) (*handlers.Run, error)
}

// runProgress is what the progress line shows of a run.
type runProgress struct {
	Phase    string // "waiting" (the service has not started the run yet), or the run's state
	Polls    int
	Progress string // X-Progress as Pathling sent it ("42%"), empty when absent
	Attempts int
	Driver   string
}

func progressOf(r *handlers.Run) runProgress {
	return runProgress{Phase: string(r.State), Polls: r.Polls, Progress: r.Progress, Attempts: r.Attempts, Driver: r.Driver}
}

// String is the line's text without the elapsed time, e.g.
// "polling, 3 polls, X-Progress 42%".
func (p runProgress) String() string {
	parts := []string{p.Phase}
	if p.Polls > 0 {
		parts = append(parts, plural(p.Polls, "poll"))
	}
	if p.Progress != "" {
		parts = append(parts, "X-Progress "+p.Progress)
	}
	if p.Attempts > 1 {
		parts = append(parts, fmt.Sprintf("attempt %d", p.Attempts))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// loadProgress reads requestID's run; nil when the progress is unknown (no
// store, or the store did not answer).
func loadProgress(ctx context.Context, runs runLoader, target, requestID string) *runProgress {
	if runs == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, progressInterval)
	defer cancel()
	r, err := runs.LoadRun(ctx, target, requestID)
	switch {
	case err == nil:
		p := progressOf(r)
		return &p
	case errors.Is(err, handlers.ErrRunNotFound):
		// Published, not yet picked up (or queued behind another run).
		return &runProgress{Phase: "waiting"}
	default:
		return nil
	}
}

// progressPrinter writes the progress of a wait. On a terminal it redraws
// one line; elsewhere it prints a line when the progress changes and
// otherwise every plainHeartbeat.
type progressPrinter struct {
	w        io.Writer
	tty      bool
	start    time.Time
	last     string // text of the last line, without the elapsed time
	lastAt   time.Time
	drawn    bool // tty: a line is on screen, unterminated
	drawnLen int
}

func newProgressPrinter(w io.Writer, start time.Time) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), start: start, lastAt: start}
}

// isTerminal reports whether w is a terminal (so a line can be redrawn).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// show draws the progress at now; p nil means unknown (elapsed time only).
func (pp *progressPrinter) show(now time.Time, p *runProgress) {
	text := "waiting..."
	if p != nil {
		text = p.String()
	}
	elapsed := now.Sub(pp.start).Round(time.Second)
	if pp.tty {
		line := fmt.Sprintf("%s (%s elapsed)", text, elapsed)
		pad := ""
		if n := pp.drawnLen - len(line); n > 0 {
			pad = strings.Repeat(" ", n) // erase what the longer previous line left
		}
		fmt.Fprintf(pp.w, "\r%s%s", line, pad)
		pp.drawn, pp.drawnLen = true, len(line)
		return
	}
	if text == pp.last && now.Sub(pp.lastAt) < plainHeartbeat {
		return
	}
	if text == "waiting..." && pp.last == "" && now.Sub(pp.lastAt) < plainHeartbeat {
		return // unknown progress: only the heartbeat, as before live progress existed
	}
	fmt.Fprintf(pp.w, "%s (%s elapsed)\n", text, elapsed)
	pp.last, pp.lastAt = text, now
}

// finish ends a line left open on a terminal, so the outcome starts on its own line.
func (pp *progressPrinter) finish() {
	if pp.drawn {
		fmt.Fprintln(pp.w)
		pp.drawn = false
	}
}
