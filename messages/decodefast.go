package messages

import (
	"encoding/json"

	"github.com/pathling-sync/pathling-sync/internal/jsonscan"
)

// scanValidRequest is scanRequestObject and the decoding of a SyncRequested in one pass over a
// body that checkBody and json.Valid accepted, without encoding/json's Decoder (whose Token and
// Decode took two thirds of DecodeRequested's time and allocations). It fills req only when it
// reports no errs. ok is false for a body with an escaped key, which it leaves to
// scanRequestObject (that names it as decoded).
func scanValidRequest(body []byte, req *SyncRequested) (present map[string]bool, errs ValidationErrors, ok bool) {
	s := jsonScanner{jsonscan.Scanner{B: body}}
	s.Consume('{')
	present = make(map[string]bool, 4)
	for first := true; ; first = false {
		if s.Consume('}') {
			return present, errs, true
		}
		if !first {
			s.Consume(',')
		}
		key, escaped := s.rawString()
		if escaped {
			return nil, nil, false
		}
		s.Consume(':')
		name, kind, known := requestField(key)
		switch {
		case !known:
			name = string(key)
			errs = append(errs, invalid(fieldLabel(name), "unknown field (the fields are %s)", requestFieldNames))
			s.Skip()
		case present[name]:
			errs = append(errs, invalid(name, "appears more than once"))
			s.Skip()
		default:
			errs = append(errs, s.readField(name, kind, req)...)
		}
		present[name] = true
	}
}

// requestField returns the field's name as a constant (no allocation), its kind, and whether it
// is one of SyncRequested's (requestFieldKind's).
func requestField(key []byte) (string, fieldKind, bool) {
	for _, f := range requestFields {
		if string(key) == f.name {
			return f.name, f.kind, true
		}
	}
	return "", 0, false
}

var requestFields = [...]struct {
	name string
	kind fieldKind
}{
	{"exportUrl", kindString}, {"saveMode", kindString}, {"types", kindStringArray}, {"since", kindString},
	{"until", kindString}, {"typeFilters", kindStringArray}, {"elements", kindStringArray},
	{"includeAssociatedData", kindStringArray}, {"concurrency", kindString}, {"timeout", kindString},
	{"correlationId", kindString}, {"requestedBy", kindString},
}

// readField checks the value at s against kind, as checkKind does, and stores it in req's field
// (whatever req holds is dropped when there are errors).
func (s *jsonScanner) readField(name string, kind fieldKind, req *SyncRequested) ValidationErrors {
	got := s.kind()
	switch kind {
	case kindString:
		if got != "string" {
			s.Skip()
			return ValidationErrors{invalid(name, "expected a string, got %s", got)}
		}
		*req.stringField(name) = s.stringValue()
	case kindStringArray:
		if got != "array" {
			s.Skip()
			return ValidationErrors{invalid(name, "expected an array of strings, got %s", got)}
		}
		var errs ValidationErrors
		var buf [8]string
		values := buf[:0] // copied out below: one allocation for a short list
		s.Consume('[')
		for i := 0; ; i++ {
			if s.Consume(']') {
				break
			}
			if i > 0 {
				s.Consume(',')
			}
			if k := s.kind(); k != "string" {
				errs = append(errs, invalid(indexed(name, i), "expected a string, got %s", k))
				s.Skip()
				continue
			}
			values = append(values, s.stringValue())
		}
		// [] decodes to an empty slice (that normalize makes nil), as encoding/json's.
		*req.listField(name) = append(make([]string, 0, len(values)), values...)
		return errs
	}
	return nil
}

func (r *SyncRequested) stringField(name string) *string {
	switch name {
	case "exportUrl":
		return &r.ExportURL
	case "saveMode":
		return &r.SaveMode
	case "since":
		return &r.Since
	case "until":
		return &r.Until
	case "concurrency":
		return &r.Concurrency
	case "timeout":
		return &r.Timeout
	case "correlationId":
		return &r.CorrelationID
	case "requestedBy":
		return &r.RequestedBy
	}
	panic("messages: no string field " + name)
}

func (r *SyncRequested) listField(name string) *[]string {
	switch name {
	case "types":
		return &r.Types
	case "typeFilters":
		return &r.TypeFilters
	case "elements":
		return &r.Elements
	case "includeAssociatedData":
		return &r.IncludeAssociatedData
	}
	panic("messages: no list field " + name)
}

// jsonScanner walks JSON that json.Valid accepted.
type jsonScanner struct{ jsonscan.Scanner }

// kind names the JSON type of the next value, as jsonKind does.
func (s *jsonScanner) kind() string {
	s.WS()
	return jsonKind(s.B[s.I:])
}

// rawString reads a string's bytes as they are in the body (escapes not decoded); escaped tells
// whether it has any.
func (s *jsonScanner) rawString() (raw []byte, escaped bool) {
	s.Consume('"')
	start := s.I
	for s.B[s.I] != '"' {
		if s.B[s.I] == '\\' {
			escaped = true
			s.I++
		}
		s.I++
	}
	s.I++
	return s.B[start : s.I-1], escaped
}

// stringValue reads a string as encoding/json decodes it.
func (s *jsonScanner) stringValue() string {
	start := s.I
	raw, escaped := s.rawString()
	if !escaped {
		return string(raw) // the body is valid UTF-8 (checkBody)
	}
	var v string
	_ = json.Unmarshal(s.B[start:s.I], &v) // valid: json.Valid accepted the body
	return v
}
