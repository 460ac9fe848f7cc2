package source

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// exportRequest is a validated kick-off request.
type exportRequest struct {
	types                 []string // nil: every type
	since, until          *time.Time
	outputFormat          string
	elements              []string // as given, validated
	typeFilters           []string // validated, not applied (see README)
	includeAssociatedData []string // accepted, not applied
}

// kickOffError is a kick-off rejection: an HTTP status and the OperationOutcome diagnostics.
type kickOffError struct {
	status int
	msg    string
}

func (e *kickOffError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &kickOffError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// acceptOK applies the IG's Accept rule leniently: the IG asks clients to send
// application/fhir+json and lets servers treat a missing header as that. We accept no header,
// application/fhir+json, application/json, application/* and */* (parameters ignored).
func acceptOK(values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch mt {
			case "application/fhir+json", "application/json", "application/*", "*/*":
				return true
			}
		}
	}
	return false
}

// preferAsync reports whether the Prefer header holds the respond-async preference (other
// preferences such as handling=lenient may sit beside it).
func preferAsync(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			token, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(token), "respond-async") {
				return true
			}
		}
	}
	return false
}

// parseKickOff reads the parameters of a GET (query string) or POST (Parameters body) kick-off.
func parseKickOff(r *http.Request) (exportRequest, error) {
	if r.Method == http.MethodPost {
		values, err := parametersBody(r)
		if err != nil {
			return exportRequest{}, err
		}
		return buildRequest(values)
	}
	return buildRequest(r.URL.Query())
}

// postValueTypes lists, per known parameter, which value[x] a POST Parameters body must use.
var postValueTypes = map[string][]string{
	"_outputFormat":         {"valueString"},
	"_since":                {"valueInstant"},
	"_until":                {"valueInstant"},
	"_type":                 {"valueString", "valueCode"},
	"_elements":             {"valueString"},
	"_typeFilter":           {"valueString"},
	"includeAssociatedData": {"valueCode"},
	"patient":               {"valueReference"},
}

// parametersBody decodes a POST kick-off's Parameters resource into name -> values, checking
// value[x] types strictly. Unknown parameter names are ignored, as for GET.
func parametersBody(r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/fhir+json" && mt != "application/json") {
		return nil, &kickOffError{status: http.StatusUnsupportedMediaType,
			msg: "a POST kick-off needs Content-Type application/fhir+json"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil {
		return nil, badRequest("reading the request body: %v", err)
	}
	if len(body) > 1<<20 {
		return nil, badRequest("request body larger than 1 MiB")
	}
	var params struct {
		ResourceType string                       `json:"resourceType"`
		Parameter    []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(body, &params); err != nil {
		return nil, badRequest("request body is not a Parameters resource: %v", err)
	}
	if params.ResourceType != "Parameters" {
		return nil, badRequest("request body must be a Parameters resource, got resourceType %q", params.ResourceType)
	}
	values := url.Values{}
	for i, p := range params.Parameter {
		var name string
		if err := json.Unmarshal(p["name"], &name); err != nil || name == "" {
			return nil, badRequest("parameter[%d] has no name", i)
		}
		allowed, known := postValueTypes[name]
		if !known {
			continue
		}
		var found bool
		for _, key := range allowed {
			raw, ok := p[key]
			if !ok {
				continue
			}
			found = true
			if key == "valueReference" {
				values.Add(name, string(raw))
				break
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, badRequest("parameter %s: %s must be a string", name, key)
			}
			values.Add(name, v)
			break
		}
		if !found {
			return nil, badRequest("parameter %s must carry %s", name, strings.Join(allowed, " or "))
		}
	}
	return values, nil
}

// buildRequest validates kick-off parameters. Unknown names are ignored.
func buildRequest(q url.Values) (exportRequest, error) {
	var req exportRequest
	for _, name := range []string{"_outputFormat", "_since", "_until"} {
		if len(q[name]) > 1 {
			return req, badRequest("parameter %s may be given only once", name)
		}
	}
	if len(q["patient"]) > 0 {
		return req, badRequest("parameter patient is not supported by a system-level export")
	}

	req.outputFormat = "application/fhir+ndjson"
	if v := q.Get("_outputFormat"); len(q["_outputFormat"]) == 1 {
		switch v {
		// "application/fhir ndjson": an unencoded '+' in a query string decodes to a space.
		case "application/fhir+ndjson", "application/ndjson", "ndjson", "application/fhir ndjson":
			req.outputFormat = v
		default:
			return req, badRequest("unsupported _outputFormat %q: use application/fhir+ndjson, application/ndjson or ndjson", v)
		}
	}

	for _, name := range []string{"_since", "_until"} {
		if len(q[name]) == 0 {
			continue
		}
		t, err := parseInstant(q.Get(name))
		if err != nil {
			return req, badRequest("parameter %s: %v", name, err)
		}
		if name == "_since" {
			req.since = &t
		} else {
			req.until = &t
		}
	}
	if req.since != nil && req.until != nil && req.until.Before(*req.since) {
		return req, badRequest("_until (%s) is before _since (%s)", req.until.Format(time.RFC3339Nano), req.since.Format(time.RFC3339Nano))
	}

	if vals, ok := q["_type"]; ok {
		seen := map[string]bool{}
		for _, v := range vals {
			for _, t := range strings.Split(v, ",") {
				t = strings.TrimSpace(t)
				if t == "" || seen[t] {
					continue
				}
				if !r4ResourceTypes[t] {
					return req, badRequest("unknown resource type %q in _type", t)
				}
				seen[t] = true
				req.types = append(req.types, t)
			}
		}
		if len(req.types) == 0 {
			return req, badRequest("_type names no resource type")
		}
	}

	for _, v := range q["_elements"] {
		for _, e := range strings.Split(v, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if err := checkElement(e); err != nil {
				return req, badRequest("_elements: %v", err)
			}
			req.elements = append(req.elements, e)
		}
	}

	for _, v := range q["_typeFilter"] {
		// Several filters may come comma-separated; a comma inside a filter must be %2C-encoded.
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			typ, query, ok := strings.Cut(f, "?")
			if !ok || !r4ResourceTypes[typ] {
				return req, badRequest("_typeFilter %q: expected [ResourceType]?[search parameters]", f)
			}
			if _, err := url.ParseQuery(query); err != nil {
				return req, badRequest("_typeFilter %q: %v", f, err)
			}
			req.typeFilters = append(req.typeFilters, f)
		}
	}
	for _, v := range q["includeAssociatedData"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				req.includeAssociatedData = append(req.includeAssociatedData, d)
			}
		}
	}
	return req, nil
}

// instantPattern is the FHIR instant: seconds and a zone are required.
var instantPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$`)

// parseInstant parses a FHIR instant. A space where the zone's '+' should be (an unencoded '+'
// in a query string) is read as '+'.
func parseInstant(s string) (time.Time, error) {
	if len(s) > 6 && s[len(s)-6] == ' ' {
		s = s[:len(s)-6] + "+" + s[len(s)-5:]
	}
	if !instantPattern.MatchString(s) {
		return time.Time{}, fmt.Errorf("%q is not a FHIR instant (e.g. 2025-01-01T00:00:00.000Z)", s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a valid instant: %w", s, err)
	}
	return t, nil
}

var elementNamePattern = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)

// checkElement validates one _elements entry: "element" or "Type.element", root elements only.
func checkElement(e string) error {
	typ, name, qualified := strings.Cut(e, ".")
	if !qualified {
		name, typ = typ, ""
	}
	if typ != "" && !r4ResourceTypes[typ] {
		return fmt.Errorf("%q: unknown resource type %q", e, typ)
	}
	name = strings.TrimSuffix(name, "[x]")
	if !elementNamePattern.MatchString(name) {
		return fmt.Errorf("%q: only root elements (Type.element or element) are allowed", e)
	}
	return nil
}

// elementsFor returns the element names _elements keeps for typ, or nil when no filter
// applies to that type (only elements qualified with other types were given).
func elementsFor(elements []string, typ string) []string {
	var keep []string
	for _, e := range elements {
		t, name, qualified := strings.Cut(e, ".")
		if !qualified {
			keep = append(keep, strings.TrimSuffix(t, "[x]"))
		} else if t == typ {
			keep = append(keep, strings.TrimSuffix(name, "[x]"))
		}
	}
	return keep
}

// subsetted is the meta.tag that marks a resource trimmed by _elements.
var subsetted = map[string]any{
	"system":  "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
	"code":    "SUBSETTED",
	"display": "subsetted",
}

// applyElements trims a stored resource to the kept root elements plus the mandatory ones,
// and tags it SUBSETTED.
func applyElements(body []byte, typ string, keep []string) ([]byte, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{"resourceType": true, "id": true, "meta": true}
	for _, m := range mandatoryElements[typ] {
		allowed[m] = true
	}
	for _, k := range keep {
		allowed[k] = true
	}
	for key := range obj {
		name := strings.TrimPrefix(key, "_") // primitive extensions travel with their element
		if allowed[name] {
			continue
		}
		if matchesChoice(name, keep) {
			continue
		}
		delete(obj, key)
	}
	meta, _ := obj["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["meta"] = meta
	}
	tags, _ := meta["tag"].([]any)
	meta["tag"] = append(tags, subsetted)
	return encodeResource(obj)
}

// matchesChoice reports whether key is a typed form of a requested choice element, e.g.
// valueQuantity for "value".
func matchesChoice(key string, keep []string) bool {
	for _, k := range keep {
		if choiceElements[k] && len(key) > len(k) && strings.HasPrefix(key, k) &&
			key[len(k)] >= 'A' && key[len(k)] <= 'Z' {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
