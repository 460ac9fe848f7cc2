package pathling

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Save modes (Pathling compares them case-sensitively).
const (
	SaveModeMerge     = "merge"
	SaveModeOverwrite = "overwrite"
	SaveModeAppend    = "append"
	SaveModeIgnore    = "ignore"
	SaveModeError     = "error"
)

// Export types.
const (
	ExportTypeDynamic = "dynamic"
	ExportTypeStatic  = "static"
)

// Input formats.
const (
	InputFormatNDJSON  = "application/fhir+ndjson"
	InputFormatParquet = "application/vnd.apache.parquet"
)

// ImportRequest is the body of a $import-pnp kick-off. Empty fields are
// omitted, leaving Pathling's defaults (which differ between versions for
// SaveMode: set it).
type ImportRequest struct {
	// ExportURL is the source URL exactly as the target expects it (see
	// NormalizeExportURL). Required.
	ExportURL string
	// SaveMode is one of the SaveMode constants.
	SaveMode string
	// ExportType is ExportTypeDynamic or ExportTypeStatic.
	ExportType string
	// InputFormat is the format Pathling requests from the source.
	InputFormat string
	// Types are FHIR resource type names (_type, one parameter each).
	Types []string
	// Elements are _elements values, one parameter each.
	Elements []string
	// TypeFilters are _typeFilter values, one parameter each.
	TypeFilters []string
	// IncludeAssociatedData are includeAssociatedData codes.
	IncludeAssociatedData []string
	// Since and Until bound the export (_since, _until), sent as instants
	// in UTC with millisecond precision (sub-millisecond digits dropped).
	Since, Until *time.Time
}

var saveModes = map[string]bool{
	SaveModeMerge: true, SaveModeOverwrite: true, SaveModeAppend: true, SaveModeIgnore: true, SaveModeError: true,
}

// validate catches what Pathling would reject or silently misread.
func (r ImportRequest) validate() error {
	u, err := url.Parse(r.ExportURL)
	switch {
	case r.ExportURL == "":
		return fmt.Errorf("exportUrl is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("exportUrl must be an absolute http(s) URL")
	case u.User != nil:
		return fmt.Errorf("exportUrl must not contain userinfo")
	case r.SaveMode != "" && !saveModes[r.SaveMode]:
		return fmt.Errorf("unknown saveMode %q", clip(r.SaveMode, 32))
	case r.ExportType != "" && r.ExportType != ExportTypeDynamic && r.ExportType != ExportTypeStatic:
		return fmt.Errorf("unknown exportType %q", clip(r.ExportType, 32))
	case r.Since != nil && r.Since.IsZero(), r.Until != nil && r.Until.IsZero():
		return fmt.Errorf("_since and _until must not be the zero time")
	case r.Since != nil && r.Until != nil && r.Since.After(*r.Until):
		return fmt.Errorf("_since is after _until")
	}
	for name, values := range map[string][]string{
		"_type": r.Types, "_elements": r.Elements, "_typeFilter": r.TypeFilters, "includeAssociatedData": r.IncludeAssociatedData,
	} {
		for _, v := range values {
			if v == "" {
				return fmt.Errorf("%s has an empty value", name)
			}
		}
	}
	return nil
}

// formatInstant writes t as a FHIR instant in UTC with milliseconds.
func formatInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// Parameters returns the FHIR Parameters body for the request, with the
// value[x] type Pathling reads for each parameter (exportUrl valueUrl;
// saveMode, exportType, inputFormat, includeAssociatedData valueCode; _type,
// _elements, _typeFilter valueString; _since, _until valueInstant). Any other
// type would be rejected or, worse, silently dropped.
func (r ImportRequest) Parameters() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	// One array for the parameters and one for their values (rather than
	// an allocation for each value and for each growth).
	n := 7 + len(r.Types) + len(r.Elements) + len(r.TypeFilters) + len(r.IncludeAssociatedData)
	values := make([]string, 0, n)
	str := func(s string) *string {
		values = append(values, s) // never grows: n counts every value
		return &values[len(values)-1]
	}
	params := make([]fhirParameter, 0, n)
	params = append(params, fhirParameter{Name: "exportUrl", ValueURL: str(r.ExportURL)})
	code := func(name, v string) {
		if v != "" {
			params = append(params, fhirParameter{Name: name, ValueCode: str(v)})
		}
	}
	stringValues := func(name string, vs []string) {
		for _, v := range vs {
			params = append(params, fhirParameter{Name: name, ValueString: str(v)})
		}
	}
	code("saveMode", r.SaveMode)
	code("exportType", r.ExportType)
	code("inputFormat", r.InputFormat)
	stringValues("_type", r.Types)
	if r.Since != nil {
		params = append(params, fhirParameter{Name: "_since", ValueInstant: str(formatInstant(*r.Since))})
	}
	if r.Until != nil {
		params = append(params, fhirParameter{Name: "_until", ValueInstant: str(formatInstant(*r.Until))})
	}
	stringValues("_elements", r.Elements)
	stringValues("_typeFilter", r.TypeFilters)
	for _, v := range r.IncludeAssociatedData {
		code("includeAssociatedData", v)
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep '&' in type filters readable
	if err := enc.Encode(fhirParameters{ResourceType: "Parameters", Parameter: params}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// KickOff starts an import: POST [base]/$import-pnp with Prefer:
// respond-async. It returns the job's status URL (Content-Location, made
// absolute). Pathling maps an identical request to the same job, so sending
// the same request again is idempotent while the job exists.
//
// Errors are *Error:
//   - KindRejected: a request that fails validation here (HTTPStatus 0) or
//     that Pathling refuses with 400 (or another 4xx such as 404 for a wrong
//     base URL); final, Outcome and Message say why;
//   - KindUnauthorized: 401 again after one retry with a fresh token, or no
//     token could be obtained;
//   - KindForbidden: 403 (the token lacks pathling:import-pnp);
//   - KindUnavailable: network error, timeout, 408, 429 or 5xx; retryable
//     (RetryAfter set when the server sent one), unless ctx itself ended;
//   - KindProtocol: a 2xx other than 202, or 202 without a usable
//     Content-Location.
func (c *Client) KickOff(ctx context.Context, req ImportRequest) (string, error) {
	a, err := c.Start(ctx, req)
	return a.StatusURL, err
}

// Accepted is Pathling's answer to an accepted kick-off.
type Accepted struct {
	// StatusURL is the job's status URL (Content-Location, made absolute).
	StatusURL string
	// ServerDate is the response's Date header (the server's clock, whole
	// seconds), zero when absent: callers measure clock skew with it.
	ServerDate time.Time
}

// Start is KickOff returning the whole answer: the status URL and the
// server's Date. Errors as for KickOff.
func (c *Client) Start(ctx context.Context, req ImportRequest) (Accepted, error) {
	const op = "kick-off"
	body, err := req.Parameters()
	if err != nil {
		return Accepted{}, &Error{Op: op, Kind: KindRejected, Message: err.Error()}
	}
	target, err := parseTarget(c.kickOffURL) // built from a parsed URL in New
	if err != nil {
		return Accepted{}, &Error{Op: op, Kind: KindProtocol, Message: "cannot build request", Err: err}
	}
	r, err := c.send(ctx, op, http.MethodPost, target, body, c.headers.post)
	if err != nil {
		return Accepted{}, err
	}
	defer r.release()
	switch {
	case r.status == http.StatusAccepted:
		url, err := c.statusURL(op, r)
		if err != nil {
			return Accepted{}, err
		}
		return Accepted{StatusURL: url, ServerDate: r.date}, nil
	case r.status == http.StatusBadRequest:
		e := &Error{Op: op, Kind: KindRejected, HTTPStatus: r.status}
		describe(e, r)
		return Accepted{}, e
	}
	if e := c.statusError(op, r); e != nil {
		return Accepted{}, e
	}
	kind := KindProtocol
	if r.status >= 400 && r.status < 500 {
		kind = KindRejected
	}
	e := &Error{Op: op, Kind: kind, HTTPStatus: r.status}
	describe(e, r)
	return Accepted{}, e
}

// statusURL reads Content-Location from a 202, resolving a relative value
// against the kick-off URL (the effective request URI, RFC 9110 §8.7).
func (c *Client) statusURL(op string, r response) (string, error) {
	loc := r.header.Get("Content-Location")
	if loc == "" {
		return "", &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status, Message: "202 without Content-Location"}
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return "", &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status, Message: "Content-Location is not a URL"}
	}
	if ref.IsAbs() {
		if ref.Scheme != "http" && ref.Scheme != "https" || ref.Host == "" {
			return "", &Error{Op: op, Kind: KindProtocol, HTTPStatus: r.status, Message: "Content-Location is not an http(s) URL"}
		}
		return loc, nil
	}
	kickOff, _ := url.Parse(c.kickOffURL) // built from a parsed URL in New
	return kickOff.ResolveReference(ref).String(), nil
}
