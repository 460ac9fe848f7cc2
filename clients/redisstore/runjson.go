package redisstore

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// A run record is written three times a sync; json.Marshal spent a dozen
// allocations on each (reflection, every time.Time's MarshalJSON, the
// result's copy). appendRun writes the same bytes as json.Marshal into a
// reused buffer. What it does not know how to write byte for byte (a time
// outside RFC 3339, an outcome body that is not compact JSON free of
// characters encoding/json escapes) it leaves to json.Marshal: ok false.
// TestRunJSONMatchesEncodingJSON and FuzzRunJSON hold it to json.Marshal's
// output, and TestRunJSONKnowsEveryField to the fields of the types.

// appendRun appends r, with its Token replaced by token, as json.Marshal
// encodes it; ok is false when r holds something left to json.Marshal (dst
// is then to be dropped). The token comes apart so that the caller need not
// copy the record to set it.
func appendRun(dst []byte, r *handlers.Run, token int64) (_ []byte, ok bool) {
	ok = true
	b := append(dst, `{"runId":`...)
	b = appendJSONString(b, r.RunID)
	b = append(b, `,"requestId":`...)
	b = appendJSONString(b, r.RequestID)
	b = append(b, `,"target":`...)
	b = appendJSONString(b, r.Target)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(r.State))
	b = append(b, `,"token":`...)
	b = strconv.AppendInt(b, token, 10)
	if r.Driver != "" {
		b = append(b, `,"driver":`...)
		b = appendJSONString(b, r.Driver)
	}
	b = append(b, `,"request":`...)
	b = appendRequest(b, &r.Request)
	b = append(b, `,"params":`...)
	if b, ok = appendParams(b, &r.Params); !ok {
		return b, false
	}
	b = append(b, `,"watermarkKey":`...)
	b = appendJSONString(b, r.WatermarkKey)
	if r.StatusURL != "" {
		b = append(b, `,"statusUrl":`...)
		b = appendJSONString(b, r.StatusURL)
	}
	if r.Progress != "" {
		b = append(b, `,"progress":`...)
		b = appendJSONString(b, r.Progress)
	}
	times := func(name string, t time.Time, omitZero bool) {
		if !ok || omitZero && t.IsZero() {
			return
		}
		b = append(b, name...)
		b, ok = appendJSONTime(b, t)
	}
	times(`,"expectedEnd":`, r.ExpectedEnd, true)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	b = append(b, `,"polls":`...)
	b = strconv.AppendInt(b, int64(r.Polls), 10)
	b = append(b, `,"losses":`...)
	b = strconv.AppendInt(b, int64(r.Losses), 10)
	times(`,"startedAt":`, r.StartedAt, false)
	times(`,"firstKickOff":`, r.FirstKickOff, true)
	times(`,"updatedAt":`, r.UpdatedAt, false)
	times(`,"deadline":`, r.Deadline, false)
	times(`,"finishedAt":`, r.FinishedAt, true)
	if !ok {
		return b, false
	}
	if e := r.Outcome; e != nil {
		b = append(b, `,"outcome":{"subject":`...)
		b = appendJSONString(b, e.Subject)
		b = append(b, `,"envelope":`...)
		if b, ok = appendEnvelope(b, &e.Envelope); !ok {
			return b, false
		}
		b = append(b, `,"body":`...)
		switch {
		case e.Body == nil:
			b = append(b, "null"...)
		case compactJSON(e.Body):
			b = append(b, e.Body...)
		default:
			return b, false
		}
		b = append(b, '}')
	}
	return append(b, '}'), true
}

// appendRequest writes messages.SyncRequested (every field omitempty).
func appendRequest(b []byte, q *messages.SyncRequested) []byte {
	b = append(b, '{')
	n := len(b)
	str := func(name, v string) {
		if v == "" {
			return
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, name...)
		b = appendJSONString(b, v)
	}
	list := func(name string, v []string) {
		if len(v) == 0 {
			return
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, name...)
		b = appendJSONStrings(b, v)
	}
	str(`"exportUrl":`, q.ExportURL)
	str(`"saveMode":`, q.SaveMode)
	list(`"types":`, q.Types)
	str(`"since":`, q.Since)
	str(`"until":`, q.Until)
	list(`"typeFilters":`, q.TypeFilters)
	list(`"elements":`, q.Elements)
	list(`"includeAssociatedData":`, q.IncludeAssociatedData)
	str(`"concurrency":`, q.Concurrency)
	str(`"timeout":`, q.Timeout)
	str(`"correlationId":`, q.CorrelationID)
	str(`"requestedBy":`, q.RequestedBy)
	return append(b, '}')
}

// appendParams writes handlers.ImportParams.
func appendParams(b []byte, p *handlers.ImportParams) ([]byte, bool) {
	b = append(b, `{"exportUrl":`...)
	b = appendJSONString(b, p.ExportURL)
	b = append(b, `,"saveMode":`...)
	b = appendJSONString(b, p.SaveMode)
	list := func(name string, v []string) {
		if len(v) > 0 {
			b = append(b, name...)
			b = appendJSONStrings(b, v)
		}
	}
	list(`,"types":`, p.Types)
	list(`,"elements":`, p.Elements)
	list(`,"typeFilters":`, p.TypeFilters)
	list(`,"includeAssociatedData":`, p.IncludeAssociatedData)
	ok := true
	if p.Since != nil {
		b = append(b, `,"since":`...)
		b, ok = appendJSONTime(b, *p.Since)
	}
	if ok && p.Until != nil {
		b = append(b, `,"until":`...)
		b, ok = appendJSONTime(b, *p.Until)
	}
	return append(b, '}'), ok
}

// appendEnvelope writes messages.Envelope (no tags: Go's field names).
func appendEnvelope(b []byte, e *messages.Envelope) ([]byte, bool) {
	b = append(b, `{"ID":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"Source":`...)
	b = appendJSONString(b, e.Source)
	b = append(b, `,"Type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"Subject":`...)
	b = appendJSONString(b, e.Subject)
	b = append(b, `,"ContentType":`...)
	b = appendJSONString(b, e.ContentType)
	b = append(b, `,"Time":`...)
	b, ok := appendJSONTime(b, e.Time)
	b = append(b, `,"TraceParent":`...)
	b = appendJSONString(b, e.TraceParent)
	b = append(b, `,"TraceState":`...)
	b = appendJSONString(b, e.TraceState)
	b = append(b, `,"ReplayOf":`...)
	b = appendJSONString(b, e.ReplayOf)
	return append(b, '}'), ok
}

func appendJSONStrings(b []byte, v []string) []byte {
	b = append(b, '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString writes s quoted. A string with a byte encoding/json
// escapes (a control character, '"', '\\', '<', '>', '&') or any non-ASCII
// byte (invalid UTF-8, U+2028, U+2029) is rare here: encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime writes t as time.Time's MarshalJSON does; ok is false where
// MarshalJSON fails (a year outside [0,9999], a zone hour outside [0,23]).
func appendJSONTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	// MarshalJSON's checks (time.Time.appendStrictRFC3339).
	if len(b)-n0 < len("2006-01-02T15:04:05Z") || b[n0+len("2006")] != '-' {
		return b, false
	}
	if b[len(b)-1] != 'Z' {
		c := b[len(b)-len("Z07:00")]
		h := 10*int(b[len(b)-len("07:00")]-'0') + int(b[len(b)-len("7:00")]-'0')
		if ('0' <= c && c <= '9') || h >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

// compactJSON tells whether json.Marshal writes raw (a json.RawMessage)
// unchanged: valid JSON with no whitespace outside strings and none of the
// characters it escapes ('<', '>', '&', U+2028, U+2029; any 0xE2 byte is
// taken for one of the latter).
func compactJSON(raw []byte) bool {
	inString, escaped := false, false
	for _, c := range raw {
		switch {
		case c == '<' || c == '>' || c == '&' || c == 0xE2:
			return false
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	return json.Valid(raw)
}
