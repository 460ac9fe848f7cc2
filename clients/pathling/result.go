package pathling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
)

// ImportResult is what a finished $import-pnp job reports.
type ImportResult struct {
	// TransactionTime is Pathling's own clock when the import finished
	// (not the source's export time: never use it as the next _since).
	// Zero if TransactionTimeRaw is missing or unparsable.
	TransactionTime time.Time
	// TransactionTimeRaw is transactionTime exactly as Pathling sent it.
	TransactionTimeRaw string
	// Request is the kick-off URL Pathling echoes.
	Request string
	// Outputs are the inputUrl of each output: Pathling's staged copies of
	// the downloaded files (one per file; no per-type counts are reported).
	Outputs []string
}

// fhirParameters is the wire shape of a FHIR Parameters resource, with the
// value[x] types this package reads or writes.
type fhirParameters struct {
	ResourceType string          `json:"resourceType"`
	Parameter    []fhirParameter `json:"parameter"`
}

type fhirParameter struct {
	Name          string          `json:"name"`
	ValueURL      *string         `json:"valueUrl,omitempty"`
	ValueURI      *string         `json:"valueUri,omitempty"`
	ValueCode     *string         `json:"valueCode,omitempty"`
	ValueString   *string         `json:"valueString,omitempty"`
	ValueInstant  *string         `json:"valueInstant,omitempty"`
	ValueDateTime *string         `json:"valueDateTime,omitempty"`
	Part          []fhirParameter `json:"part,omitempty"`
}

// firstSet returns the first of the given values that is set.
func firstSet(values ...*string) (string, bool) {
	for _, v := range values {
		if v != nil {
			return *v, true
		}
	}
	return "", false
}

// ParseImportResult decodes the body of a finished job (HTTP 200 at $job) in
// either shape Pathling writes:
//
//   - a FHIR Parameters resource (for a FHIR Accept): transactionTime as
//     valueString (what Pathling sends) or valueInstant (what its docs say);
//     request as valueString/valueUri/valueUrl; each output with a part
//     inputUrl as valueUrl/valueUri/valueString;
//   - plain JSON (for another Accept): {"transactionTime", "request",
//     "output"}, where output is a single object for one file and an array
//     for several.
//
// The shape is told by the content (a resourceType means FHIR); contentType
// only has to be a JSON media type or empty. Unknown parameters are ignored.
func ParseImportResult(b []byte, contentType string) (*ImportResult, error) {
	// The two media types Pathling sends need no parsing.
	if contentType != "" && contentType != fhirJSON && contentType != "application/json" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, fmt.Errorf("pathling: import result: unexpected Content-Type %q", clip(contentType, 64))
		}
	}
	if r, ok := parseParametersFast(b); ok {
		return r, nil
	}
	return parseImportResultJSON(b)
}

// parseImportResultJSON is ParseImportResult after the Content-Type check,
// with encoding/json: the reference parseParametersFast must agree with.
func parseImportResultJSON(b []byte) (*ImportResult, error) {
	var probe struct {
		ResourceType *string `json:"resourceType"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("pathling: import result: not a JSON object: %w", err)
	}
	if probe.ResourceType != nil {
		if *probe.ResourceType != "Parameters" {
			return nil, fmt.Errorf("pathling: import result: unexpected resourceType %q", clip(*probe.ResourceType, 64))
		}
		return parseParametersResult(b)
	}
	return parsePlainResult(b)
}

func parseParametersResult(b []byte) (*ImportResult, error) {
	var p fhirParameters
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("pathling: import result: %w", err)
	}
	r := &ImportResult{}
	var haveTime, haveRequest bool
	for _, param := range p.Parameter {
		switch param.Name {
		case "transactionTime":
			if v, ok := firstSet(param.ValueString, param.ValueInstant, param.ValueDateTime); ok && !haveTime {
				r.TransactionTimeRaw, haveTime = v, true
			}
		case "request":
			if v, ok := firstSet(param.ValueString, param.ValueURI, param.ValueURL); ok && !haveRequest {
				r.Request, haveRequest = v, true
			}
		case "output":
			for _, part := range param.Part {
				if part.Name != "inputUrl" {
					continue
				}
				if v, ok := firstSet(part.ValueURL, part.ValueURI, part.ValueString); ok {
					r.Outputs = append(r.Outputs, v)
				}
			}
		}
	}
	r.TransactionTime = parseInstant(r.TransactionTimeRaw)
	return r, nil
}

// plainOutput is one element of the plain-JSON output.
type plainOutput struct {
	InputURL *string `json:"inputUrl"`
}

func parsePlainResult(b []byte) (*ImportResult, error) {
	var p struct {
		TransactionTime *string         `json:"transactionTime"`
		Request         *string         `json:"request"`
		Output          json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("pathling: import result: %w", err)
	}
	r := &ImportResult{}
	if p.TransactionTime != nil {
		r.TransactionTimeRaw = *p.TransactionTime
	}
	if p.Request != nil {
		r.Request = *p.Request
	}
	outs, err := parsePlainOutputs(p.Output)
	if err != nil {
		return nil, fmt.Errorf("pathling: import result: output: %w", err)
	}
	for _, o := range outs {
		if o.InputURL != nil {
			r.Outputs = append(r.Outputs, *o.InputURL)
		}
	}
	r.TransactionTime = parseInstant(r.TransactionTimeRaw)
	return r, nil
}

// parsePlainOutputs accepts output as an object (one file), an array (several
// files), null or absent (none).
func parsePlainOutputs(raw json.RawMessage) ([]plainOutput, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	switch raw[0] {
	case '{':
		var one plainOutput
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, err
		}
		return []plainOutput{one}, nil
	case '[':
		var many []plainOutput
		if err := json.Unmarshal(raw, &many); err != nil {
			return nil, err
		}
		return many, nil
	}
	return nil, errors.New("neither an object nor an array")
}

// instantLayouts are the spellings of an instant accepted in transactionTime:
// RFC 3339 (FHIR instant), a Java-style offset without colon, and a local
// time without offset (read as UTC).
var instantLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
}

// parseInstant parses s, returning the zero time if it is not an instant.
func parseInstant(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	for _, layout := range instantLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}
