package pathling

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Save modes, as Pathling spells them (case-sensitive).
const (
	SaveModeMerge     = "merge"
	SaveModeOverwrite = "overwrite"
	SaveModeAppend    = "append"
	SaveModeIgnore    = "ignore"
	SaveModeError     = "error"
)

const (
	formatNDJSON  = "application/fhir+ndjson"
	formatParquet = "application/vnd.apache.parquet"
)

// importRequest is what Pathling's ImportPnpOperationValidator extracts from the body.
type importRequest struct {
	ExportURL             string
	ExportType            string
	SaveMode              string
	InputFormat           string
	Types                 []string
	Since                 *time.Time
	Until                 *time.Time
	Elements              []string
	TypeFilters           []string
	IncludeAssociatedData []string
}

// cacheKey reproduces ImportPnpProvider.computeCacheKeyComponent: the part of the job key
// that comes from the parsed body.
func (r importRequest) cacheKey() string {
	var b strings.Builder
	fmt.Fprintf(&b, "exportUrl=%s|exportType=%s|saveMode=%s|format=%s",
		r.ExportURL, r.ExportType, r.SaveMode, r.InputFormat)
	if len(r.Types) > 0 {
		b.WriteString("|types=" + strings.Join(r.Types, ","))
	}
	if r.Since != nil {
		b.WriteString("|since=" + r.Since.UTC().Format(time.RFC3339Nano))
	}
	if r.Until != nil {
		b.WriteString("|until=" + r.Until.UTC().Format(time.RFC3339Nano))
	}
	if len(r.Elements) > 0 {
		b.WriteString("|elements=" + strings.Join(r.Elements, ","))
	}
	if len(r.TypeFilters) > 0 {
		b.WriteString("|typeFilters=" + strings.Join(r.TypeFilters, ","))
	}
	if len(r.IncludeAssociatedData) > 0 {
		b.WriteString("|includeAssociatedData=" + strings.Join(r.IncludeAssociatedData, ","))
	}
	return b.String()
}

// inputError is Pathling's InvalidUserInputError: a 400 whose message may carry the Java class
// name when Config.JavaErrorPrefix asks for it.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

// requestError is a plain HAPI InvalidRequestException: always a 400 with this exact message.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

// paramValue is one Parameters.parameter entry: its name and its single value[x].
type paramValue struct {
	name      string
	valueType string // "Url", "Code", "String", ... ("" when the entry has no value[x])
	raw       json.RawMessage
}

func (p paramValue) stringValue() (string, bool) {
	var s string
	if err := json.Unmarshal(p.raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// parseParameters decodes the request body the way HAPI's parser does for a @ResourceParam
// Parameters: it must be a JSON object whose resourceType is Parameters. Each parameter keeps
// its value[x] type, which Pathling checks strictly.
func parseParameters(body []byte) ([]paramValue, error) {
	var doc struct {
		ResourceType *string                      `json:"resourceType"`
		Parameter    []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, &requestError{msg: "Failed to parse request body as JSON resource. Error was: " +
			"Failed to parse JSON encoded FHIR content: " + err.Error()}
	}
	if doc.ResourceType == nil {
		return nil, &requestError{msg: "Failed to parse request body as JSON resource. Error was: " +
			"Invalid JSON content detected, missing required element: 'resourceType'"}
	}
	if *doc.ResourceType != "Parameters" {
		return nil, &requestError{msg: fmt.Sprintf(
			"Incorrect resource type found, expected \"Parameters\" but found %q", *doc.ResourceType)}
	}
	params := make([]paramValue, 0, len(doc.Parameter))
	for _, entry := range doc.Parameter {
		var p paramValue
		if raw, ok := entry["name"]; ok {
			_ = json.Unmarshal(raw, &p.name)
		}
		// Sorted so that an entry with two value[x] (invalid FHIR) is read deterministically.
		keys := make([]string, 0, len(entry))
		for k := range entry {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.HasPrefix(k, "value") && len(k) > len("value") {
				p.valueType = k[len("value"):]
				p.raw = entry[k]
				break
			}
		}
		params = append(params, p)
	}
	return params, nil
}

// first returns the first parameter with this name, whatever its type (ParamUtil.extractFromPart
// takes the first match and then casts it).
func first(params []paramValue, name string) (paramValue, bool) {
	for _, p := range params {
		if p.name == name {
			return p, true
		}
	}
	return paramValue{}, false
}

// Value types that HAPI models as subclasses of StringType (CodeType, MarkdownType), which
// Pathling's `instanceof StringType` filter lets through.
var stringLikeTypes = map[string]bool{"String": true, "Code": true, "Markdown": true}

// stringList reproduces extractStringList: every parameter of this name whose value is a
// StringType (or subclass); others are silently dropped.
func stringList(params []paramValue, name string) []string {
	var out []string
	for _, p := range params {
		if p.name != name || !stringLikeTypes[p.valueType] {
			continue
		}
		if s, ok := p.stringValue(); ok {
			out = append(out, s)
		}
	}
	return out
}

// codeList reproduces extractCodeList: only valueCode counts.
func codeList(params []paramValue, name string) []string {
	var out []string
	for _, p := range params {
		if p.name != name || p.valueType != "Code" {
			continue
		}
		if s, ok := p.stringValue(); ok {
			out = append(out, s)
		}
	}
	return out
}

// instant reproduces extractInstant: the first parameter of this name whose value is a
// valueInstant; a valueDateTime (or anything else) is silently ignored. An unparseable instant
// is dropped too.
func instant(params []paramValue, name string) *time.Time {
	for _, p := range params {
		if p.name != name || p.valueType != "Instant" {
			continue
		}
		s, ok := p.stringValue()
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			continue
		}
		return &t
	}
	return nil
}

// parseImportRequest validates the body parameters in Pathling's order and with its messages.
// Errors are *inputError (InvalidUserInputError) or *requestError.
func parseImportRequest(body []byte) (importRequest, error) {
	params, err := parseParameters(body)
	if err != nil {
		return importRequest{}, err
	}
	var req importRequest

	// exportUrl: valueUrl only (UrlType); anything else is "missing".
	p, ok := first(params, "exportUrl")
	if !ok || p.valueType != "Url" {
		return importRequest{}, inputErrorf("Missing required parameter: exportUrl")
	}
	if s, ok := p.stringValue(); ok && s != "" {
		req.ExportURL = s
	} else {
		return importRequest{}, inputErrorf("exportUrl must not be null")
	}

	// exportType: valueCode, default dynamic.
	req.ExportType = "dynamic"
	if p, ok := first(params, "exportType"); ok {
		if p.valueType != "Code" {
			return importRequest{}, inputErrorf("Invalid exportType")
		}
		s, _ := p.stringValue()
		req.ExportType = s
	}
	if req.ExportType != "dynamic" && req.ExportType != "static" {
		return importRequest{}, inputErrorf("Invalid exportType: %s. Must be 'dynamic' or 'static'.", req.ExportType)
	}

	// saveMode: valueCode, default merge (Pathling >= 2.0.0), case-sensitive.
	req.SaveMode = SaveModeMerge
	if p, ok := first(params, "saveMode"); ok {
		s, _ := p.stringValue()
		if p.valueType != "Code" || !validSaveMode(s) {
			return importRequest{}, inputErrorf("Unknown saveMode.")
		}
		req.SaveMode = s
	}

	// inputFormat: valueCode, default NDJSON, matched case-insensitively.
	req.InputFormat = formatNDJSON
	if p, ok := first(params, "inputFormat"); ok {
		if p.valueType != "Code" {
			return importRequest{}, inputErrorf("Unknown format.")
		}
		s, _ := p.stringValue()
		switch {
		case strings.TrimSpace(s) == "":
			req.InputFormat = formatNDJSON
		case strings.EqualFold(s, formatNDJSON):
			req.InputFormat = formatNDJSON
		case strings.EqualFold(s, formatParquet):
			req.InputFormat = formatParquet
		default:
			return importRequest{}, inputErrorf("Unsupported format: %s", s)
		}
	}

	req.Types = stringList(params, "_type")
	req.Since = instant(params, "_since")
	req.Until = instant(params, "_until")
	req.Elements = stringList(params, "_elements")
	req.TypeFilters = stringList(params, "_typeFilter")
	req.IncludeAssociatedData = codeList(params, "includeAssociatedData")
	return req, nil
}

func validSaveMode(s string) bool {
	switch s {
	case SaveModeMerge, SaveModeOverwrite, SaveModeAppend, SaveModeIgnore, SaveModeError:
		return true
	}
	return false
}

// extension returns the staged file extension Pathling uses for the input format.
func (r importRequest) extension() string {
	if r.InputFormat == formatParquet {
		return "parquet"
	}
	return "ndjson"
}
