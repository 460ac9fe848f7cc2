package messages

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Header is the part of a message's headers the envelope needs. nats.Header and watermill's
// message.Metadata both satisfy it.
type Header interface {
	Get(key string) string
	Set(key, value string)
}

// Header names of the CloudEvents 1.0 binary mode, W3C trace context and JetStream dedup, as
// written on the wire. NATS header names are case-sensitive: write exactly these.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderContentType = "content-type"
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	// HeaderNatsMsgID is JetStream's deduplication id; the envelope sets it to ce-id.
	HeaderNatsMsgID = "Nats-Msg-Id"
	// HeaderReplayOf is a CloudEvents extension attribute naming the event a replayed
	// SyncRequested re-publishes (`pathling-sync replay`): the original's ce-id.
	HeaderReplayOf = "ce-replayof"
)

// SpecVersion is the CloudEvents version written in ce-specversion.
const SpecVersion = "1.0"

// ContentTypeJSON is the content type of every event body.
const ContentTypeJSON = "application/json"

// CloudEvents types of the three events.
const (
	TypeRequested = "pathling.sync.requested.v1"
	TypeCompleted = "pathling.sync.completed.v1"
	TypeFailed    = "pathling.sync.failed.v1"
)

// Envelope is an event's CloudEvents context plus its trace context. Subject is the target name.
type Envelope struct {
	ID          string
	Source      string
	Type        string
	Subject     string
	ContentType string
	Time        time.Time
	TraceParent string
	TraceState  string
	// ReplayOf is the id of the event this one replays (extension attribute ce-replayof);
	// empty for an event that is not a replay.
	ReplayOf string
}

// WriteTo writes the envelope into h in binary mode: ce-specversion 1.0, ce-id, ce-source,
// ce-type, ce-time (RFC 3339 in UTC, nanoseconds), ce-subject, content-type (ContentTypeJSON when
// ContentType is empty), traceparent and tracestate, ce-replayof, and Nats-Msg-Id equal to ce-id. Empty fields
// and a zero Time are not written. Values are written as given: they must not contain CR or LF,
// which NATS headers cannot carry.
func (e Envelope) WriteTo(h Header) {
	h.Set(HeaderSpecVersion, SpecVersion)
	set := func(key, value string) {
		if value != "" {
			h.Set(key, value)
		}
	}
	set(HeaderID, e.ID)
	set(HeaderSource, e.Source)
	set(HeaderType, e.Type)
	if !e.Time.IsZero() {
		h.Set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	}
	set(HeaderSubject, e.Subject)
	contentType := e.ContentType
	if contentType == "" {
		contentType = ContentTypeJSON
	}
	h.Set(HeaderContentType, contentType)
	set(HeaderTraceParent, e.TraceParent)
	set(HeaderTraceState, e.TraceState)
	set(HeaderReplayOf, e.ReplayOf)
	set(HeaderNatsMsgID, e.ID)
}

// ReadEnvelope reads an envelope from h. ok is false when h has no ce-* attribute at all (a
// headless publish, e.g. `nats pub` by hand); the envelope then still carries any trace context
// and content type found. An unparsable ce-time reads as the zero time. Each name is looked up
// exactly first, then case-insensitively when h is a map (so "Traceparent", as OTel's HTTP
// carrier writes it, is found).
func ReadEnvelope(h Header) (env Envelope, ok bool) {
	if isNil(h) {
		return Envelope{}, false
	}
	get := func(key string) string { return headerValue(h, key) }
	env = Envelope{
		ID:          get(HeaderID),
		Source:      get(HeaderSource),
		Type:        get(HeaderType),
		Subject:     get(HeaderSubject),
		ContentType: get(HeaderContentType),
		TraceParent: get(HeaderTraceParent),
		TraceState:  get(HeaderTraceState),
		ReplayOf:    get(HeaderReplayOf),
	}
	rawTime := get(HeaderTime)
	if t, err := time.Parse(time.RFC3339Nano, rawTime); err == nil {
		env.Time = t
	}
	ok = get(HeaderSpecVersion) != "" || env.ID != "" || env.Source != "" || env.Type != "" ||
		env.Subject != "" || rawTime != "" || env.ReplayOf != ""
	return env, ok
}

// CheckType reports a ce-type other than want as an invalid request: an event of another type
// (say a SyncCompleted) published on a subject meant for want. An envelope without ce-type (a
// headless publish) passes. The error matches ErrInvalidRequest.
func (e Envelope) CheckType(want string) error {
	if e.Type == "" || e.Type == want {
		return nil
	}
	return invalid(HeaderType, "%s is not %q: only %s events are accepted here", quote(e.Type), want, want)
}

// RequestID is the id of a received SyncRequested: its ce-id, else its Nats-Msg-Id, else
// "<stream>:<stream sequence>" (the contract's rule for headless publishes).
func RequestID(h Header, stream string, seq uint64) string {
	if !isNil(h) {
		if id := headerValue(h, HeaderID); id != "" {
			return id
		}
		if id := headerValue(h, HeaderNatsMsgID); id != "" {
			return id
		}
	}
	return stream + ":" + strconv.FormatUint(seq, 10)
}

// headerValue returns h's value for key, matched exactly, else case-insensitively when h is a
// map with string keys (nats.Header, message.Metadata, http.Header). When several keys differ
// only in case, the smallest one that has a value wins, so the result does not depend on map order.
func headerValue(h Header, key string) string {
	if v := h.Get(key); v != "" {
		return v
	}
	var keys []string
	switch m := asStringMap(h).(type) {
	case map[string][]string:
		for k := range m {
			if k != key && strings.EqualFold(k, key) {
				keys = append(keys, k)
			}
		}
	case map[string]string:
		for k := range m {
			if k != key && strings.EqualFold(k, key) {
				keys = append(keys, k)
			}
		}
	default:
		rv := reflect.ValueOf(h)
		if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
			return ""
		}
		for iter := rv.MapRange(); iter.Next(); {
			if k := iter.Key().String(); k != key && strings.EqualFold(k, key) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// Map types of the usual headers (nats.Header, http.Header; watermill's
// message.Metadata), for asStringMap.
var (
	stringSlicesMap = reflect.TypeFor[map[string][]string]()
	stringMap       = reflect.TypeFor[map[string]string]()
)

// asStringMap returns h as a plain map[string][]string or map[string]string
// when its type is one of those maps under another name, else h: ranging
// over a plain map copies no keys, where a reflect.MapIter allocates each
// one (headerValue looks up most names of a header that lacks them).
func asStringMap(h Header) any {
	rv := reflect.ValueOf(h)
	if rv.Kind() != reflect.Map {
		return h
	}
	switch t := rv.Type(); {
	case t.ConvertibleTo(stringSlicesMap):
		return rv.Convert(stringSlicesMap).Interface()
	case t.ConvertibleTo(stringMap):
		return rv.Convert(stringMap).Interface()
	}
	return h
}

// isNil reports whether h is nil or a nil pointer; a nil map is a usable (empty) header.
func isNil(h Header) bool {
	if h == nil {
		return true
	}
	rv := reflect.ValueOf(h)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// RequestOption adds an optional attribute to a SyncRequested envelope (NewRequestEnvelope).
type RequestOption func(*Envelope)

// WithTraceContext makes the request continue a trace: traceparent and tracestate as given
// (empty values are not written).
func WithTraceContext(traceParent, traceState string) RequestOption {
	return func(e *Envelope) { e.TraceParent, e.TraceState = traceParent, traceState }
}

// WithReplayOf marks the request as a replay of the event with id original (ce-replayof).
func WithReplayOf(original string) RequestOption {
	return func(e *Envelope) { e.ReplayOf = original }
}

// NewRequestEnvelope is the envelope of a SyncRequested: ce-id id (which becomes Nats-Msg-Id, so
// the same id is deduplicated), ce-source source, ce-type TypeRequested, ce-subject target, JSON
// content, ce-time at in UTC. Every publisher of requests (the CLI, schedules, chains) builds its
// envelopes here, so they differ only in what they say, not in how.
func NewRequestEnvelope(id, source, target string, at time.Time, opts ...RequestOption) Envelope {
	e := Envelope{
		ID: id, Source: source, Type: TypeRequested, Subject: target,
		ContentType: ContentTypeJSON, Time: at.UTC(),
	}
	for _, opt := range opts {
		opt(&e)
	}
	return e
}
