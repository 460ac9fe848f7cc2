package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
)

// This file is the one place that builds an outcome event (SyncCompleted,
// SyncFailed) and the one place that publishes one: for a finished run
// (driver.go), for a request that never ran (a refusal, bad input: sync.go)
// and for a stored outcome sent again (a redelivered finished request).

// outcomes builds and publishes the outcome events.
type outcomes struct {
	pub      Publisher
	subjects messages.Subjects
	source   string // CloudEvents source
	clock    clock.Clock
	prop     propagation.TextMapPropagator
	tracer   trace.Tracer
	names    map[string]*targetNames // by configured target; read-only after New
}

// echo is what an outcome repeats of its request: who asked for what. A run
// echoes the parameters it sent to Pathling (since resolved to an instant);
// a request that never ran echoes them as requested.
type echo struct {
	requestID string
	runID     string // empty when the request never ran
	target    string
	exportURL string // redacted in the event
	saveMode  string
	types     []string
	since     string
	until     string
	attempts  int
	polls     int
	request   messages.SyncRequested // correlationId, requestedBy
	startedAt time.Time              // zero when the request never ran
}

// runEcho is the echo of a run.
func runEcho(r *Run) echo {
	return echo{
		requestID: r.RequestID,
		runID:     r.RunID,
		target:    r.Target,
		exportURL: r.Params.ExportURL,
		saveMode:  r.Params.SaveMode,
		types:     r.Params.Types,
		since:     formatTime(r.Params.Since),
		until:     formatTime(r.Params.Until),
		attempts:  r.Attempts,
		polls:     r.Polls,
		request:   r.Request,
		startedAt: r.StartedAt,
	}
}

// intakeEcho is the echo of a request that never ran, as far as its intake
// got: the export URL normalized when it got that far, else as sent (say,
// refused for its userinfo: the event shows it redacted).
func intakeEcho(in intake) echo {
	exportURL := in.exportURL
	if messages.RedactURL(exportURL) == "" {
		exportURL = in.req.ExportURL
	}
	return echo{
		requestID: in.requestID,
		target:    in.target,
		exportURL: exportURL,
		saveMode:  in.req.SaveMode,
		types:     in.req.Types,
		since:     in.req.Since,
		until:     in.req.Until,
		request:   in.req,
	}
}

// result is how a request ended: completed (job, empty, watermark) or failed
// (the rest).
type result struct {
	failed bool
	// Completed:
	statusURL string    // the Pathling job's
	job       JobStatus // TransactionTime, Outputs
	empty     bool      // an incremental export with no changes
	watermark string    // the stored watermark after the run, "" when none
	// Failed:
	reason           messages.Reason
	retryable        bool
	message          string
	pathling         *PathlingError // Pathling's HTTP status and OperationOutcome, when it gave them
	runningRequestID string         // for ReasonConflict
}

func completion(statusURL string, job JobStatus, empty bool, watermark string) result {
	return result{statusURL: statusURL, job: job, empty: empty, watermark: watermark}
}

func failure(reason messages.Reason, retryable bool, msg string, pe *PathlingError) result {
	return result{failed: true, reason: reason, retryable: retryable, message: msg, pathling: pe}
}

// build returns the outcome event of a request that ended with res at
// finishedAt, and its producer span: the event's traceparent, so consumers
// of the outcome continue the trace from it. publish ends the span.
func (o *outcomes) build(ctx context.Context, e echo, res result, finishedAt time.Time) (Event, trace.Span, error) {
	n := o.names[e.target]
	if n == nil { // a refusal for a target that is not configured
		n = newTargetNames(o.subjects, e.target)
	}
	typ, subject, id := messages.TypeCompleted, n.completed, messages.CompletedID(e.requestID)
	if res.failed {
		typ, subject, id = messages.TypeFailed, n.failed, messages.FailedID(e.requestID)
	}
	body, err := outcomeBody(e, res, finishedAt)
	if err != nil {
		return Event{}, nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	pctx, span := o.startPublish(ctx, subject, id, typ, e.target)
	return Event{Subject: subject, Envelope: o.envelope(pctx, id, typ, e.target), Body: body}, span, nil
}

// outcomeBody is the event body. The fields both events echo are set side
// by side here: a new one is added to echo and to both bodies below.
func outcomeBody(e echo, res result, finishedAt time.Time) ([]byte, error) {
	exportURL := messages.RedactURL(e.exportURL)
	// MarshalJSON directly: json.Marshal of a Marshaler validates and
	// compacts its (already compact) output once more, for the same bytes.
	if !res.failed {
		return messages.SyncCompleted{
			RequestID:               e.requestID,
			RunID:                   e.runID,
			Target:                  e.target,
			ExportURL:               exportURL,
			SaveMode:                e.saveMode,
			Types:                   e.types,
			Since:                   e.since,
			Until:                   e.until,
			Attempts:                e.attempts,
			CorrelationID:           e.request.CorrelationID,
			RequestedBy:             e.request.RequestedBy,
			StartedAt:               e.startedAt,
			FinishedAt:              finishedAt,
			DurationMs:              finishedAt.Sub(e.startedAt).Milliseconds(),
			Polls:                   e.polls,
			Watermark:               res.watermark,
			PathlingJob:             res.statusURL,
			PathlingTransactionTime: res.job.TransactionTime,
			Outputs:                 res.job.Outputs,
			Empty:                   res.empty,
		}.MarshalJSON()
	}
	f := messages.SyncFailed{
		RequestID:        e.requestID,
		RunID:            e.runID,
		Target:           e.target,
		ExportURL:        exportURL,
		SaveMode:         e.saveMode,
		Types:            e.types,
		Since:            e.since,
		Until:            e.until,
		Attempts:         e.attempts,
		CorrelationID:    e.request.CorrelationID,
		RequestedBy:      e.request.RequestedBy,
		Reason:           res.reason,
		Retryable:        res.retryable,
		Message:          res.message,
		RunningRequestID: res.runningRequestID,
	}
	if !e.startedAt.IsZero() { // a request that never ran has no times
		f.StartedAt, f.FinishedAt = e.startedAt, finishedAt
	}
	if pe := res.pathling; pe != nil {
		f.HTTPStatus = pe.HTTPStatus
		if len(pe.OperationOutcome) > 0 && json.Valid(pe.OperationOutcome) {
			f.OperationOutcome = pe.OperationOutcome
		}
	}
	return f.MarshalJSON()
}

// envelope builds an outcome's CloudEvents envelope, continuing the trace in ctx.
func (o *outcomes) envelope(ctx context.Context, id, typ, target string) messages.Envelope {
	var tc traceCarrier
	o.prop.Inject(ctx, &tc)
	return messages.Envelope{
		ID:          id,
		Source:      o.source,
		Type:        typ,
		Subject:     target,
		ContentType: "application/json",
		Time:        o.clock.Now().UTC(),
		TraceParent: tc.parent,
		TraceState:  tc.state,
	}
}

// traceCarrier takes what a propagator injects into an envelope: the
// traceparent and tracestate headers, without a map of slices for them.
type traceCarrier struct{ parent, state string }

func (c *traceCarrier) Get(k string) string {
	switch k {
	case messages.HeaderTraceParent:
		return c.parent
	case messages.HeaderTraceState:
		return c.state
	}
	return ""
}

func (c *traceCarrier) Set(k, v string) {
	switch k {
	case messages.HeaderTraceParent:
		c.parent = v
	case messages.HeaderTraceState:
		c.state = v
	}
}

func (c *traceCarrier) Keys() []string {
	return []string{messages.HeaderTraceParent, messages.HeaderTraceState}
}

// publish publishes ev under its producer span from build, or under a
// republish span when span is nil (a stored outcome sent again), and ends
// that span. It returns once the stream acknowledged the event; the
// Publisher retries as it sees fit, the caller asks for redelivery on error.
func (o *outcomes) publish(ctx context.Context, ev Event, span trace.Span) error {
	if span == nil {
		ctx, span = o.startRepublish(ctx, ev)
	} else {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	span.SetAttributes(semconv.MessagingMessageBodySize(len(ev.Body)))
	err := o.pub.Publish(ctx, ev)
	endSpan(span, err)
	return err
}

func formatTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return messages.FormatInstant(*t)
}
