package messages

import (
	"encoding/json"
	"strconv"
	"time"
)

// Save modes accepted in SyncRequested.SaveMode, as Pathling's $import-pnp names them
// (case-sensitive).
const (
	SaveModeMerge     = "merge"
	SaveModeOverwrite = "overwrite"
	SaveModeAppend    = "append"
	SaveModeIgnore    = "ignore"
	SaveModeError     = "error"
)

// SaveModes returns the accepted save modes, in the order error messages list them.
func SaveModes() []string {
	return []string{SaveModeMerge, SaveModeOverwrite, SaveModeAppend, SaveModeIgnore, SaveModeError}
}

// Concurrency policies accepted in SyncRequested.Concurrency. An empty value means
// ConcurrencyForbid.
const (
	// ConcurrencyForbid fails a request with ReasonConflict while another run holds the target.
	ConcurrencyForbid = "forbid"
	// ConcurrencyQueue delays a request while another run holds the target, until its timeout.
	ConcurrencyQueue = "queue"
)

// ConcurrencyPolicies returns the accepted concurrency policies.
func ConcurrencyPolicies() []string {
	return []string{ConcurrencyForbid, ConcurrencyQueue}
}

// SinceAuto is the SyncRequested.Since value that asks for the stored watermark (a full sync when
// there is none).
const SinceAuto = "auto"

// MaxTimeout is the longest timeout a SyncRequested may ask for.
const MaxTimeout = 7 * 24 * time.Hour

// SyncRequested asks for one sync of the target named in the subject. All fields are optional;
// empty fields take the target's defaults. DecodeRequested is the only way bodies from the wire
// should become values of this type; Validate checks values built in code.
type SyncRequested struct {
	// ExportURL is the source FHIR server: its base URL or its $export endpoint. Required unless the
	// target has a default.
	ExportURL string `json:"exportUrl,omitempty"`
	// SaveMode is one of SaveModes().
	SaveMode string `json:"saveMode,omitempty"`
	// Types are FHIR resource type names; empty means all types.
	Types []string `json:"types,omitempty"`
	// Since is a FHIR instant, SinceAuto, or empty (full sync). See SinceMode and SinceTime.
	Since string `json:"since,omitempty"`
	// Until is a FHIR instant or empty. See UntilTime.
	Until string `json:"until,omitempty"`
	// TypeFilters are Bulk Data _typeFilter values, "<ResourceType>?<search parameters>".
	TypeFilters []string `json:"typeFilters,omitempty"`
	// Elements are Bulk Data _elements values, "[ResourceType.]element".
	Elements []string `json:"elements,omitempty"`
	// IncludeAssociatedData are Bulk Data includeAssociatedData codes.
	IncludeAssociatedData []string `json:"includeAssociatedData,omitempty"`
	// Concurrency is ConcurrencyForbid (default) or ConcurrencyQueue.
	Concurrency string `json:"concurrency,omitempty"`
	// Timeout bounds the whole sync, as a Go duration ("2h"). See TimeoutDuration.
	Timeout string `json:"timeout,omitempty"`
	// CorrelationID is echoed in the outcome.
	CorrelationID string `json:"correlationId,omitempty"`
	// RequestedBy is echoed in the outcome.
	RequestedBy string `json:"requestedBy,omitempty"`
}

// SinceMode says how a request chooses the start of its export window.
type SinceMode int

const (
	// SinceModeFull means no since: a full export.
	SinceModeFull SinceMode = iota
	// SinceModeAuto means the stored watermark, or a full export when there is none.
	SinceModeAuto
	// SinceModeInstant means the instant in Since.
	SinceModeInstant
)

// String returns "full", "auto" or "instant".
func (m SinceMode) String() string {
	switch m {
	case SinceModeFull:
		return "full"
	case SinceModeAuto:
		return "auto"
	case SinceModeInstant:
		return "instant"
	default:
		return "unknown"
	}
}

// SinceMode reports how the request chooses its since. A Since that is neither empty nor "auto"
// counts as SinceModeInstant; only validated requests should be asked.
func (r SyncRequested) SinceMode() SinceMode {
	switch r.Since {
	case "":
		return SinceModeFull
	case SinceAuto:
		return SinceModeAuto
	default:
		return SinceModeInstant
	}
}

// SinceTime returns Since as a time when it is an instant.
func (r SyncRequested) SinceTime() (time.Time, bool) {
	return ParseInstant(r.Since)
}

// UntilTime returns Until as a time when it is set and an instant.
func (r SyncRequested) UntilTime() (time.Time, bool) {
	return ParseInstant(r.Until)
}

// TimeoutDuration returns Timeout as a duration; false when Timeout is empty or not a valid
// timeout (positive, at most MaxTimeout).
func (r SyncRequested) TimeoutDuration() (time.Duration, bool) {
	if r.Timeout == "" {
		return 0, false
	}
	d, err := time.ParseDuration(r.Timeout)
	if err != nil || d <= 0 || d > MaxTimeout {
		return 0, false
	}
	return d, true
}

// QueueOnConflict reports whether the request waits for a running sync of its target instead of
// failing with ReasonConflict.
func (r SyncRequested) QueueOnConflict() bool {
	return r.Concurrency == ConcurrencyQueue
}

// SyncCompleted reports a successful sync.
type SyncCompleted struct {
	RequestID string `json:"requestId"`
	RunID     string `json:"runId"`
	Target    string `json:"target"`
	// ExportURL is the export URL as sent to Pathling.
	ExportURL string   `json:"exportUrl"`
	SaveMode  string   `json:"saveMode"`
	Types     []string `json:"types,omitempty"`
	// Since is the resolved since (an instant), empty for a full sync.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// Watermark is the stored watermark after the run, an instant: what the next since "auto"
	// with the same export parameters starts from. The run moved it only if its export covered
	// everything from the stored watermark on (see handlers.WatermarkKey and the watermark rule
	// in docs/architecture.md); empty when none is stored.
	Watermark string `json:"watermark,omitempty"`
	// PathlingJob is the job's status URL.
	PathlingJob string `json:"pathlingJob"`
	// PathlingTransactionTime is Pathling's transactionTime as reported; empty when the export
	// was empty (Pathling reports no result then).
	PathlingTransactionTime string `json:"pathlingTransactionTime,omitempty"`
	// Outputs is the number of files Pathling imported.
	Outputs int `json:"outputs"`
	// Empty is true when an incremental export had no changes.
	Empty bool `json:"empty"`
	// StartedAt and FinishedAt are encoded as RFC 3339 in UTC with nanoseconds.
	StartedAt     time.Time `json:"startedAt"`
	FinishedAt    time.Time `json:"finishedAt"`
	DurationMs    int64     `json:"durationMs"`
	Polls         int       `json:"polls"`
	Attempts      int       `json:"attempts"`
	CorrelationID string    `json:"correlationId,omitempty"`
	RequestedBy   string    `json:"requestedBy,omitempty"`
}

// MarshalJSON encodes the event with its times in UTC.
func (c SyncCompleted) MarshalJSON() ([]byte, error) {
	if b, ok := c.appendJSON(); ok {
		return b, nil
	}
	return c.marshalReflect()
}

// marshalReflect is MarshalJSON with encoding/json: the reference appendJSON writes the same bytes
// as, and the encoder of times encoding/json refuses (a year outside 0..9999), with its error.
func (c SyncCompleted) marshalReflect() ([]byte, error) {
	type plain SyncCompleted // no methods: avoids recursion
	p := plain(c)
	p.StartedAt = p.StartedAt.UTC()
	p.FinishedAt = p.FinishedAt.UTC()
	return json.Marshal(p)
}

// appendJSON writes what marshalReflect does, field by field, into one buffer (encoding/json took
// four allocations and most of the time on a copy of the event and the times' MarshalJSON). false
// for a time encoding/json refuses.
func (c SyncCompleted) appendJSON() ([]byte, bool) {
	started, finished := c.StartedAt.UTC(), c.FinishedAt.UTC()
	if !jsonTimeOK(started) || !jsonTimeOK(finished) {
		return nil, false
	}
	n := 320 + len(c.RequestID) + len(c.RunID) + len(c.Target) + len(c.ExportURL) + len(c.SaveMode) +
		len(c.Since) + len(c.Until) + len(c.Watermark) + len(c.PathlingJob) + len(c.PathlingTransactionTime) +
		len(c.CorrelationID) + len(c.RequestedBy)
	for _, t := range c.Types {
		n += len(t) + 3
	}
	b := make([]byte, 0, n)
	b = appendJSONField(b, `{"requestId":`, c.RequestID)
	b = appendJSONField(b, `,"runId":`, c.RunID)
	b = appendJSONField(b, `,"target":`, c.Target)
	b = appendJSONField(b, `,"exportUrl":`, c.ExportURL)
	b = appendJSONField(b, `,"saveMode":`, c.SaveMode)
	if len(c.Types) > 0 {
		b = append(b, `,"types":[`...)
		for i, t := range c.Types {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, t)
		}
		b = append(b, ']')
	}
	b = appendJSONOmitEmpty(b, `,"since":`, c.Since)
	b = appendJSONOmitEmpty(b, `,"until":`, c.Until)
	b = appendJSONOmitEmpty(b, `,"watermark":`, c.Watermark)
	b = appendJSONField(b, `,"pathlingJob":`, c.PathlingJob)
	b = appendJSONOmitEmpty(b, `,"pathlingTransactionTime":`, c.PathlingTransactionTime)
	b = strconv.AppendInt(append(b, `,"outputs":`...), int64(c.Outputs), 10)
	b = strconv.AppendBool(append(b, `,"empty":`...), c.Empty)
	b = append(started.AppendFormat(append(b, `,"startedAt":"`...), time.RFC3339Nano), '"')
	b = append(finished.AppendFormat(append(b, `,"finishedAt":"`...), time.RFC3339Nano), '"')
	b = strconv.AppendInt(append(b, `,"durationMs":`...), c.DurationMs, 10)
	b = strconv.AppendInt(append(b, `,"polls":`...), int64(c.Polls), 10)
	b = strconv.AppendInt(append(b, `,"attempts":`...), int64(c.Attempts), 10)
	b = appendJSONOmitEmpty(b, `,"correlationId":`, c.CorrelationID)
	b = appendJSONOmitEmpty(b, `,"requestedBy":`, c.RequestedBy)
	return append(b, '}'), true
}

// Reason says why a sync failed.
type Reason string

// Failure reasons, as listed in the service contract.
const (
	ReasonInvalidRequest      Reason = "invalid_request"
	ReasonUnknownTarget       Reason = "unknown_target"
	ReasonExportURLNotAllowed Reason = "export_url_not_allowed"
	ReasonConflict            Reason = "conflict"
	ReasonRejected            Reason = "rejected"
	ReasonImportFailed        Reason = "import_failed"
	ReasonJobLost             Reason = "job_lost"
	ReasonTimeout             Reason = "timeout"
	ReasonUnauthorized        Reason = "unauthorized"
	ReasonUnavailable         Reason = "unavailable"
	// ReasonLockLost and ReasonCancelled are reserved by the contract; this
	// version never sends them (a driver that loses its lock leaves the run to
	// its new driver, which answers; a shutdown hands the request back).
	ReasonLockLost  Reason = "lock_lost"
	ReasonCancelled Reason = "cancelled"
)

// Reasons returns every failure reason of the contract.
func Reasons() []Reason {
	return []Reason{
		ReasonInvalidRequest, ReasonUnknownTarget, ReasonExportURLNotAllowed, ReasonConflict,
		ReasonRejected, ReasonImportFailed, ReasonJobLost, ReasonTimeout, ReasonUnauthorized,
		ReasonUnavailable, ReasonLockLost, ReasonCancelled,
	}
}

// Valid reports whether r is one of Reasons().
func (r Reason) Valid() bool {
	for _, known := range Reasons() {
		if r == known {
			return true
		}
	}
	return false
}

// SyncFailed reports a failed sync. The request's fields are echoed as received (they may be
// the invalid values that caused an invalid_request).
type SyncFailed struct {
	RequestID string `json:"requestId"`
	// RunID is empty when the failure came before a run existed.
	RunID     string   `json:"runId,omitempty"`
	Target    string   `json:"target"`
	ExportURL string   `json:"exportUrl,omitempty"`
	SaveMode  string   `json:"saveMode,omitempty"`
	Types     []string `json:"types,omitempty"`
	Since     string   `json:"since,omitempty"`
	Until     string   `json:"until,omitempty"`
	Reason    Reason   `json:"reason"`
	Retryable bool     `json:"retryable"`
	// Message is for humans and never holds a secret.
	Message string `json:"message"`
	// HTTPStatus is Pathling's status code, when Pathling gave one.
	HTTPStatus int `json:"httpStatus,omitempty"`
	// OperationOutcome is Pathling's OperationOutcome, when it sent one (a JSON object).
	OperationOutcome json.RawMessage `json:"operationOutcome,omitempty"`
	// RunningRequestID names the request holding the target, for ReasonConflict.
	RunningRequestID string    `json:"runningRequestId,omitempty"`
	Attempts         int       `json:"attempts"`
	CorrelationID    string    `json:"correlationId,omitempty"`
	RequestedBy      string    `json:"requestedBy,omitempty"`
	StartedAt        time.Time `json:"startedAt,omitzero"`
	FinishedAt       time.Time `json:"finishedAt,omitzero"`
}

// MarshalJSON encodes the event with its times in UTC.
func (f SyncFailed) MarshalJSON() ([]byte, error) {
	type plain SyncFailed // no methods: avoids recursion
	p := plain(f)
	if !p.StartedAt.IsZero() {
		p.StartedAt = p.StartedAt.UTC()
	}
	if !p.FinishedAt.IsZero() {
		p.FinishedAt = p.FinishedAt.UTC()
	}
	return json.Marshal(p)
}

// FailedFor starts a SyncFailed for a request: it copies the request's identifying and echoed
// fields; the caller sets Reason, Retryable, Message and the rest.
func FailedFor(requestID, target string, req SyncRequested) SyncFailed {
	return SyncFailed{
		RequestID:     requestID,
		Target:        target,
		ExportURL:     req.ExportURL,
		SaveMode:      req.SaveMode,
		Types:         req.Types,
		Since:         req.Since,
		Until:         req.Until,
		CorrelationID: req.CorrelationID,
		RequestedBy:   req.RequestedBy,
	}
}

// CompletedID is the deterministic CloudEvents id of a request's SyncCompleted.
func CompletedID(requestID string) string { return requestID + "/completed" }

// FailedID is the deterministic CloudEvents id of a request's SyncFailed.
func FailedID(requestID string) string { return requestID + "/failed" }

// FormatInstant formats t as the contract writes instants: RFC 3339 in UTC with as many
// fractional digits as needed.
func FormatInstant(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}
