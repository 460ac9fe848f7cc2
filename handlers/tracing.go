package handlers

import (
	"context"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/messages"
)

// This file holds the spans of a delivery. One trace runs from the
// SyncRequested's traceparent to the outcome's:
//
//	process <subject>            consumer span: the whole delivery (a run may take hours,
//	├── lock                     but each child is short and exported when it ends)
//	├── kick-off                 ─ HTTP client span(s) of the Pathling client under it
//	├── poll                     one per status request ─ HTTP client span under it
//	├── ...
//	├── watermark commit
//	└── publish <subject>        producer span: the outcome event's traceparent
//
// Waits between polls are not spans.

// TracerName is the instrumentation scope of the handler's spans.
const TracerName = "github.com/pathling-sync/pathling-sync/handlers"

// Names of the spans inside a delivery.
const (
	SpanLock      = "lock"
	SpanKickOff   = "kick-off"
	SpanPoll      = "poll"
	SpanWatermark = "watermark commit"
)

// Attribute keys of this service (OTel semantic conventions have none for
// these).
const (
	AttrTarget      = attribute.Key("pathling_sync.target")
	AttrRequestID   = attribute.Key("pathling_sync.request_id")
	AttrRunID       = attribute.Key("pathling_sync.run_id")
	AttrDelivery    = attribute.Key("pathling_sync.delivery_count")
	AttrDisposition = attribute.Key("pathling_sync.disposition")
	AttrOutcome     = attribute.Key("pathling_sync.outcome")
	AttrReason      = attribute.Key("pathling_sync.reason")
	AttrRepublished = attribute.Key("pathling_sync.republished")
	AttrLockResult  = attribute.Key("pathling_sync.lock.result")
	AttrLockToken   = attribute.Key("pathling_sync.lock.token")
	AttrAdopted     = attribute.Key("pathling_sync.adopted")
	AttrAttempt     = attribute.Key("pathling_sync.attempt")
	AttrPoll        = attribute.Key("pathling_sync.poll")
	AttrJobState    = attribute.Key("pathling_sync.job.state")
	AttrJobURL      = attribute.Key("pathling_sync.job.url")
	AttrProgress    = attribute.Key("pathling_sync.job.progress")
	AttrWatermark   = attribute.Key("pathling_sync.watermark")
)

// Lock results (AttrLockResult).
const (
	lockAcquired = "acquired"
	lockHeld     = "held"
	lockQueued   = "queued"
	lockError    = "error"
)

const messagingSystemNATS = "nats"

// Span kinds as start options, made once (each call would box one).
var (
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
	producerKind = trace.WithSpanKind(trace.SpanKindProducer)
)

// targetNames are the subjects of a configured target and the names of the
// spans on them, made once (at New) rather than concatenated per delivery.
type targetNames struct {
	requested, process     string // SyncRequested subject, "process <subject>"
	completed, publishDone string // SyncCompleted subject, "publish <subject>"
	failed, publishFailed  string // SyncFailed subject, "publish <subject>"
}

func newTargetNames(subjects messages.Subjects, target string) *targetNames {
	n := &targetNames{requested: subjects.Requested(target), completed: subjects.Completed(target), failed: subjects.Failed(target)}
	n.process, n.publishDone, n.publishFailed = "process "+n.requested, "publish "+n.completed, "publish "+n.failed
	return n
}

// processName is the consumer span's name: "process <subject>".
func (s *Syncer) processName(subject, target string) string {
	if n := s.outcomes.names[target]; n != nil && n.requested == subject {
		return n.process
	}
	return "process " + subject
}

// publishName is the producer span's name: "publish <subject>".
func (o *outcomes) publishName(subject, target string) string {
	if n := o.names[target]; n != nil {
		switch subject {
		case n.completed:
			return n.publishDone
		case n.failed:
			return n.publishFailed
		}
	}
	return "publish " + subject
}

// startConsume starts the consumer span of a delivery, a child of the
// request's traceparent (already extracted into ctx). env is the delivery's
// envelope, when it has one (hasEnv).
func (s *Syncer) startConsume(ctx context.Context, d Delivery, env messages.Envelope, hasEnv bool, in intake) (context.Context, trace.Span) {
	// One slice, sized for every attribute: 8 below, a consumer group, a
	// target and 5 CloudEvents attributes.
	attrs := make([]attribute.KeyValue, 0, 8+2+cloudEventAttrsMax)
	attrs = append(attrs,
		semconv.MessagingSystemKey.String(messagingSystemNATS),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(d.Subject),
		semconv.MessagingMessageID(in.requestID),
		semconv.MessagingMessageBodySize(len(d.Data)),
		AttrRequestID.String(in.requestID),
		AttrDelivery.Int64(int64(d.NumDelivered)),
	)
	if s.consumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(s.consumerGroup))
	}
	if in.target != "" {
		attrs = append(attrs, AttrTarget.String(in.target))
	}
	if hasEnv {
		attrs = appendCloudEventAttrs(attrs, env)
	}
	return s.tracer.Start(ctx, s.processName(d.Subject, in.target), consumerKind, trace.WithAttributes(attrs...))
}

// startPublish starts the producer span of an outcome event. The event's
// envelope must be built from the returned context: its traceparent is this
// span, so consumers of the outcome continue the trace from it.
func (o *outcomes) startPublish(ctx context.Context, subject, id, typ, target string) (context.Context, trace.Span) {
	attrs := appendPublishAttrs(make([]attribute.KeyValue, 0, publishAttrsLen+cloudEventAttrsMax), subject, id)
	attrs = appendCloudEventAttrs(attrs, messages.Envelope{ID: id, Source: o.source, Type: typ, Subject: target})
	return o.tracer.Start(ctx, o.publishName(subject, target), producerKind, trace.WithAttributes(attrs...))
}

// startRepublish starts the producer span of a stored outcome published
// again. Its traceparent is the one stored with it, so the span links to
// that context rather than being it.
func (o *outcomes) startRepublish(ctx context.Context, ev Event) (context.Context, trace.Span) {
	attrs := appendPublishAttrs(make([]attribute.KeyValue, 0, publishAttrsLen+cloudEventAttrsMax+1), ev.Subject, ev.Envelope.ID)
	attrs = appendCloudEventAttrs(attrs, ev.Envelope)
	attrs = append(attrs, AttrRepublished.Bool(true))
	opts := []trace.SpanStartOption{producerKind, trace.WithAttributes(attrs...)}
	if ev.Envelope.TraceParent != "" {
		h := natsHeader{}
		h.Set(messages.HeaderTraceParent, ev.Envelope.TraceParent)
		if ev.Envelope.TraceState != "" {
			h.Set(messages.HeaderTraceState, ev.Envelope.TraceState)
		}
		if sc := trace.SpanContextFromContext(o.prop.Extract(context.Background(), h)); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	return o.tracer.Start(ctx, o.publishName(ev.Subject, ev.Envelope.Subject), opts...)
}

// publishAttrsLen is how many attributes appendPublishAttrs appends.
const publishAttrsLen = 5

func appendPublishAttrs(attrs []attribute.KeyValue, subject, id string) []attribute.KeyValue {
	return append(attrs,
		semconv.MessagingSystemKey.String(messagingSystemNATS),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(subject),
		semconv.MessagingMessageID(id),
	)
}

// cloudEventAttrsMax is how many attributes appendCloudEventAttrs appends
// at most.
const cloudEventAttrsMax = 5

// appendCloudEventAttrs appends an envelope's CloudEvents attributes: the
// spec version, then id, source, type and subject when set.
func appendCloudEventAttrs(attrs []attribute.KeyValue, env messages.Envelope) []attribute.KeyValue {
	attrs = append(attrs, semconv.CloudEventsEventSpecVersion(messages.SpecVersion))
	if env.ID != "" {
		attrs = append(attrs, semconv.CloudEventsEventID(env.ID))
	}
	if env.Source != "" {
		attrs = append(attrs, semconv.CloudEventsEventSource(env.Source))
	}
	if env.Type != "" {
		attrs = append(attrs, semconv.CloudEventsEventType(env.Type))
	}
	if env.Subject != "" {
		attrs = append(attrs, semconv.CloudEventsEventSubject(env.Subject))
	}
	return attrs
}

// markOutcome records a delivery's outcome on the span in ctx (the consumer
// span): failures set the span's status to Error with the reason.
func markOutcome(ctx context.Context, failed bool, reason messages.Reason) {
	span := trace.SpanFromContext(ctx)
	if !failed {
		span.SetAttributes(AttrOutcome.String("completed"))
		return
	}
	span.SetAttributes(AttrOutcome.String("failed"), AttrReason.String(string(reason)))
	span.SetStatus(codes.Error, string(reason))
}

// endSpan ends span, recording err (if any) as its error status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, errorStatus(err))
	}
	span.End()
}

// errorStatus is a span status description: the failure's reason for a
// Pathling error (its message goes in the recorded exception), else the
// error text.
func errorStatus(err error) string {
	var pe *PathlingError
	if errors.As(err, &pe) {
		if pe.HTTPStatus != 0 {
			return string(pe.Reason) + " (HTTP " + strconv.Itoa(pe.HTTPStatus) + ")"
		}
		return string(pe.Reason)
	}
	return err.Error()
}

func jobStateName(s JobState) string {
	switch s {
	case JobRunning:
		return "running"
	case JobDone:
		return "done"
	case JobFailed:
		return "failed"
	case JobLost:
		return "lost"
	}
	return "unknown"
}
