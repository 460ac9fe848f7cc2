package pathling

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// OperationOutcome is the part of a FHIR OperationOutcome this client uses.
// It marshals to (and unmarshals from) FHIR JSON, so it can be passed on as is.
type OperationOutcome struct {
	Issues []Issue
}

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
}

// fhirOutcome is the wire shape.
type fhirOutcome struct {
	ResourceType string      `json:"resourceType"`
	Issue        []fhirIssue `json:"issue"`
}

type fhirIssue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
	Details     *struct {
		Text string `json:"text,omitempty"`
	} `json:"details,omitempty"`
}

// ParseOperationOutcome decodes a FHIR OperationOutcome (JSON). An issue's
// details.text stands in for missing diagnostics. It fails on anything that
// is not a JSON object with resourceType "OperationOutcome".
func ParseOperationOutcome(b []byte) (*OperationOutcome, error) {
	var raw fhirOutcome
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("pathling: not an OperationOutcome: %w", err)
	}
	if raw.ResourceType != "OperationOutcome" {
		return nil, fmt.Errorf("pathling: not an OperationOutcome: resourceType %q", clip(raw.ResourceType, 64))
	}
	oo := &OperationOutcome{Issues: make([]Issue, 0, len(raw.Issue))}
	for _, is := range raw.Issue {
		diag := is.Diagnostics
		if diag == "" && is.Details != nil {
			diag = is.Details.Text
		}
		oo.Issues = append(oo.Issues, Issue{Severity: is.Severity, Code: is.Code, Diagnostics: diag})
	}
	return oo, nil
}

// MarshalJSON writes the outcome as a FHIR OperationOutcome.
func (o OperationOutcome) MarshalJSON() ([]byte, error) {
	issues := make([]fhirIssue, 0, len(o.Issues))
	for _, is := range o.Issues {
		issues = append(issues, fhirIssue{Severity: is.Severity, Code: is.Code, Diagnostics: is.Diagnostics})
	}
	return json.Marshal(fhirOutcome{ResourceType: "OperationOutcome", Issue: issues})
}

// UnmarshalJSON reads a FHIR OperationOutcome, as ParseOperationOutcome does.
func (o *OperationOutcome) UnmarshalJSON(b []byte) error {
	parsed, err := ParseOperationOutcome(b)
	if err != nil {
		return err
	}
	*o = *parsed
	return nil
}

// Diagnostics returns the diagnostics of the error and fatal issues (of all
// issues if there are none), each without a leading Java class name, joined
// with "; ".
func (o *OperationOutcome) Diagnostics() string {
	if o == nil {
		return ""
	}
	var errs, all []string
	for _, is := range o.Issues {
		if is.Diagnostics == "" {
			continue
		}
		d := StripJavaClassPrefix(is.Diagnostics)
		all = append(all, d)
		if is.Severity == "error" || is.Severity == "fatal" {
			errs = append(errs, d)
		}
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return strings.Join(all, "; ")
}

// javaClassPrefix matches a leading qualified Java class name and ": ", as in
// "au.csiro.pathling.errors.InvalidUserInputError: Missing required parameter".
var javaClassPrefix = regexp.MustCompile(`^(?:[a-z_][a-z0-9_]*\.)+[A-Z][A-Za-z0-9_$]*: `)

// StripJavaClassPrefix removes leading Java class names (nested exceptions
// may stack several) from a diagnostics message.
func StripJavaClassPrefix(msg string) string {
	for range 5 {
		loc := javaClassPrefix.FindStringIndex(msg)
		if loc == nil {
			break
		}
		msg = msg[loc[1]:]
	}
	return msg
}

// clip shortens s to at most n bytes (on a rune boundary) for messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

var (
	_ json.Marshaler   = OperationOutcome{}
	_ json.Unmarshaler = (*OperationOutcome)(nil)
)
