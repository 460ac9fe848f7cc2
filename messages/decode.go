package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxRequestBytes is the largest SyncRequested body DecodeRequested accepts.
const MaxRequestBytes = 64 << 10

// MaxLabelLength is the longest correlationId or requestedBy accepted, in characters.
const MaxLabelLength = 256

// ErrInvalidRequest is matched (errors.Is) by every error DecodeRequested and
// SyncRequested.Validate return.
var ErrInvalidRequest = errors.New("invalid request")

// ValidationError is one problem with a request. Field names the JSON field ("types[1]" for an
// element), or is empty for a problem with the body as a whole.
type ValidationError struct {
	Field   string
	Message string
}

// Error returns "<field>: <message>", or the message alone for the whole body.
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Is reports whether target is ErrInvalidRequest.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidRequest }

// ValidationErrors lists every problem found in a request, in body or field order. It is never
// empty when returned. errors.As finds its first *ValidationError.
type ValidationErrors []*ValidationError

// maxReportedErrors bounds the length of ValidationErrors.Error, which ends up in SyncFailed.
const maxReportedErrors = 10

// Error joins the problems with "; " (at most the first ten, then a count of the rest).
func (es ValidationErrors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i == maxReportedErrors {
			fmt.Fprintf(&b, "; and %d more problems", len(es)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.As and errors.Is see each of them.
func (es ValidationErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// DecodeRequested decodes and validates a SyncRequested body: a JSON object of at most
// MaxRequestBytes, in UTF-8, with only the contract's fields (matched case-sensitively, each at
// most once), of the right JSON types, with no data after it, whose values pass Validate.
//
// Every error is a ValidationErrors (errors.Is(err, ErrInvalidRequest) holds). On error the
// returned value holds whatever fields could be read, so that a SyncFailed can echo them
// (correlationId, requestedBy, ...); it must not be acted upon.
func DecodeRequested(body []byte) (SyncRequested, error) {
	var req SyncRequested
	if err := checkBody(body); err != nil {
		return req, ValidationErrors{err}
	}
	if json.Valid(body) { // a single object: no syntax error to report
		if present, errs, ok := scanValidRequest(body, &req); ok {
			return decoded(body, req, present, errs)
		}
	}
	return decodeRequestedJSON(body)
}

// decodeRequestedJSON is DecodeRequested after checkBody with encoding/json's Decoder: the
// reference scanValidRequest must agree with, and the reader of bodies it leaves (invalid JSON,
// escaped keys), whose syntax errors it reports as the Decoder words them.
func decodeRequestedJSON(body []byte) (SyncRequested, error) {
	var req SyncRequested
	present, errs, syntax := scanRequestObject(body)
	if syntax != nil {
		return req, ValidationErrors{syntax}
	}
	if len(errs) > 0 {
		_ = json.Unmarshal(body, &req) // best effort, for echoing in SyncFailed
		return req, errs
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// scanRequestObject has checked names and JSON types; this is a safety net.
		return req, ValidationErrors{invalid("", "body does not decode: %v", err)}
	}
	return decoded(body, req, present, nil)
}

// decoded finishes DecodeRequested for a request read without syntax errors.
func decoded(body []byte, req SyncRequested, present map[string]bool, errs ValidationErrors) (SyncRequested, error) {
	if len(errs) > 0 {
		var echo SyncRequested          // not req: its address would move it to the heap on every call
		_ = json.Unmarshal(body, &echo) // best effort, for echoing in SyncFailed
		return echo, errs
	}
	req.normalize()
	if errs := req.validate(present); len(errs) > 0 {
		return req, errs
	}
	return req, nil
}

// Validate checks a request built in code by the rules DecodeRequested applies to a decoded body;
// empty strings count as absent. It returns nil or a ValidationErrors.
func (r SyncRequested) Validate() error {
	present := map[string]bool{
		"exportUrl":     r.ExportURL != "",
		"saveMode":      r.SaveMode != "",
		"since":         r.Since != "",
		"until":         r.Until != "",
		"concurrency":   r.Concurrency != "",
		"timeout":       r.Timeout != "",
		"correlationId": r.CorrelationID != "",
		"requestedBy":   r.RequestedBy != "",
	}
	if errs := r.validate(present); len(errs) > 0 {
		return errs
	}
	return nil
}

func checkBody(body []byte) *ValidationError {
	if len(body) > MaxRequestBytes {
		return invalid("", "body is %d bytes, more than the limit of %d", len(body), MaxRequestBytes)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return invalid("", "body is empty")
	}
	if !utf8.Valid(body) {
		return invalid("", "body is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		return invalid("", "body is not a JSON object")
	}
	return nil
}

// fieldKind is the JSON type a SyncRequested field must have.
type fieldKind int

const (
	kindString fieldKind = iota + 1
	kindStringArray
)

// requestFieldNames lists the fields of SyncRequested, for error messages.
const requestFieldNames = "exportUrl, saveMode, types, since, until, typeFilters, elements, " +
	"includeAssociatedData, concurrency, timeout, correlationId, requestedBy"

func requestFieldKind(name string) (fieldKind, bool) {
	switch name {
	case "exportUrl", "saveMode", "since", "until", "concurrency", "timeout", "correlationId", "requestedBy":
		return kindString, true
	case "types", "typeFilters", "elements", "includeAssociatedData":
		return kindStringArray, true
	default:
		return 0, false
	}
}

// scanRequestObject walks the top-level object: it reports syntax errors and trailing data (as
// syntax), and unknown, repeated and mistyped fields (as errs). encoding/json alone would match
// names case-insensitively, keep the last of repeated names, and turn null into "absent".
func scanRequestObject(body []byte) (present map[string]bool, errs ValidationErrors, syntax *ValidationError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // '{', checked by checkBody
		return nil, nil, syntaxError(err)
	}
	present = make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, syntaxError(err)
		}
		name, _ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, syntaxError(err)
		}
		kind, known := requestFieldKind(name)
		switch {
		case !known:
			errs = append(errs, invalid(fieldLabel(name), "unknown field (the fields are %s)", requestFieldNames))
		case present[name]:
			errs = append(errs, invalid(name, "appears more than once"))
		default:
			errs = append(errs, checkKind(name, kind, raw)...)
		}
		present[name] = true
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, nil, syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, invalid("", "body has data after the JSON object")
	}
	return present, errs, nil
}

// plainFieldName is a field name that can be shown as it is.
var plainFieldName = regexp.MustCompile(`^[A-Za-z0-9_$.-]{1,80}$`)

// fieldLabel shows an unknown field's name: as it is when it is plain, else quoted and shortened.
func fieldLabel(name string) string {
	if plainFieldName.MatchString(name) {
		return name
	}
	return quote(name)
}

func syntaxError(err error) *ValidationError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return invalid("", "body is not valid JSON: %s at byte %d", se.Error(), se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return invalid("", "body is not valid JSON: it ends too early")
	}
	return invalid("", "body is not valid JSON: %v", err)
}

func checkKind(name string, kind fieldKind, raw json.RawMessage) ValidationErrors {
	got := jsonKind(raw)
	switch kind {
	case kindString:
		if got != "string" {
			return ValidationErrors{invalid(name, "expected a string, got %s", got)}
		}
	case kindStringArray:
		if got != "array" {
			return ValidationErrors{invalid(name, "expected an array of strings, got %s", got)}
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return ValidationErrors{invalid(name, "expected an array of strings: %v", err)}
		}
		var errs ValidationErrors
		for i, e := range elems {
			if k := jsonKind(e); k != "string" {
				errs = append(errs, invalid(fmt.Sprintf("%s[%d]", name, i), "expected a string, got %s", k))
			}
		}
		return errs
	}
	return nil
}

// jsonKind names the JSON type of a syntactically valid value.
func jsonKind(raw json.RawMessage) string {
	v := bytes.TrimLeft(raw, " \t\r\n")
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// normalize makes empty lists nil, so that a decoded request equals its re-encoding decoded.
func (r *SyncRequested) normalize() {
	for _, l := range []*[]string{&r.Types, &r.TypeFilters, &r.Elements, &r.IncludeAssociatedData} {
		if len(*l) == 0 {
			*l = nil
		}
	}
}

var (
	// resourceTypePattern is the contract's shape of a FHIR resource type name.
	resourceTypePattern = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)
	// instantPattern is FHIR's instant regex (seconds and zone required), anchored, with at most
	// nine fractional digits (what Go's time can hold).
	instantPattern = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$`)
	// typeFilterPattern is a Bulk Data _typeFilter: "<ResourceType>?<search parameters>". Commas
	// are refused because Pathling joins list parameters with commas when it calls the source.
	typeFilterPattern = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}\?[^,]+$`)
	// elementPattern is a Bulk Data _elements entry: "[ResourceType.]element".
	elementPattern = regexp.MustCompile(`^([A-Z][A-Za-z]{1,63}\.)?[a-z][A-Za-z0-9]{0,63}$`)
	// codePattern is a FHIR code without spaces or commas.
	codePattern = regexp.MustCompile(`^[^\s,]+$`)
)

// ParseInstant parses a FHIR instant (RFC 3339 with seconds and a time zone, optional fraction
// of a second); false for anything else, including impossible dates such as February 30.
func ParseInstant(s string) (time.Time, bool) {
	if !instantPattern.MatchString(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// quote renders a user-supplied value for an error message, shortened to keep messages readable.
func quote(s string) string {
	const maxRunes = 80
	if utf8.RuneCountInString(s) <= maxRunes {
		return strconv.Quote(s)
	}
	runes := []rune(s)
	return strconv.Quote(string(runes[:maxRunes])) + "…"
}

// validate checks field values; present says which string fields the body had (an empty string
// that was sent is invalid where the field has a fixed shape).
func (r SyncRequested) validate(present map[string]bool) ValidationErrors {
	var errs ValidationErrors
	add := func(e *ValidationError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	if present["exportUrl"] {
		add(validateExportURL(r.ExportURL))
	}
	if present["saveMode"] && !slices.Contains(SaveModes(), r.SaveMode) {
		add(invalid("saveMode", "%s is not one of %s", quote(r.SaveMode), strings.Join(SaveModes(), ", ")))
	}
	seen := make(map[string]bool, len(r.Types))
	for i, t := range r.Types {
		switch {
		case !resourceTypePattern.MatchString(t):
			add(invalid(indexed("types", i), "%s is not a FHIR resource type name", quote(t)))
		case seen[t]:
			add(invalid(indexed("types", i), "%s is listed more than once", quote(t)))
		}
		seen[t] = true
	}
	since, sinceIsInstant := ParseInstant(r.Since)
	if present["since"] && r.Since != SinceAuto && !sinceIsInstant {
		add(invalid("since", "%s is not an instant (RFC 3339 with time zone) or %q", quote(r.Since), SinceAuto))
	}
	if present["until"] {
		until, ok := ParseInstant(r.Until)
		switch {
		case !ok:
			add(invalid("until", "%s is not an instant (RFC 3339 with time zone)", quote(r.Until)))
		case sinceIsInstant && !until.After(since):
			add(invalid("until", "%s is not after since %s", quote(r.Until), quote(r.Since)))
		}
	}
	for i, f := range r.TypeFilters {
		switch {
		case strings.Contains(f, ","):
			add(invalid(indexed("typeFilters", i), "%s contains a comma, which Pathling would read as a list separator", quote(f)))
		case !typeFilterPattern.MatchString(f):
			add(invalid(indexed("typeFilters", i), "%s is not of the form <ResourceType>?<search parameters>", quote(f)))
		}
	}
	for i, e := range r.Elements {
		if !elementPattern.MatchString(e) {
			add(invalid(indexed("elements", i), "%s is not an element name ([ResourceType.]element)", quote(e)))
		}
	}
	for i, c := range r.IncludeAssociatedData {
		if !codePattern.MatchString(c) {
			add(invalid(indexed("includeAssociatedData", i), "%s is not a code (no spaces or commas)", quote(c)))
		}
	}
	if present["concurrency"] && !slices.Contains(ConcurrencyPolicies(), r.Concurrency) {
		add(invalid("concurrency", "%s is not one of %s", quote(r.Concurrency), strings.Join(ConcurrencyPolicies(), ", ")))
	}
	if present["timeout"] {
		add(validateTimeout(r.Timeout))
	}
	add(validateLabel("correlationId", r.CorrelationID))
	add(validateLabel("requestedBy", r.RequestedBy))
	return errs
}

// indexed names a list element's field, "types[1]" (built only for an error).
func indexed(name string, i int) string { return fmt.Sprintf("%s[%d]", name, i) }

func validateExportURL(s string) *ValidationError {
	shown := quote(RedactURL(s)) // never echo a credential
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" ||
		u.Opaque != "" || strings.ContainsFunc(s, unicode.IsSpace) {
		return invalid("exportUrl", "%s is not an absolute http(s) URL", shown)
	}
	if u.User != nil {
		return invalid("exportUrl", "%s must not contain user info (shown without it)", shown)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#") {
		return invalid("exportUrl", "%s must not contain a query or fragment (shown without them)", shown)
	}
	return nil
}

func validateTimeout(s string) *ValidationError {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return invalid("timeout", `%s is not a duration (e.g. "90m", "2h")`, quote(s))
	case d <= 0:
		return invalid("timeout", "%s is not more than 0", quote(s))
	case d > MaxTimeout:
		return invalid("timeout", "%s is longer than 7 days (168h)", quote(s))
	}
	return nil
}

func validateLabel(field, s string) *ValidationError {
	if n := utf8.RuneCountInString(s); n > MaxLabelLength {
		return invalid(field, "is %d characters long, more than the limit of %d", n, MaxLabelLength)
	}
	return nil
}
