package pathling

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Content types written by the emulator. HAPI writes FHIR JSON with a lower-case charset
// parameter and no space, which is what this reproduces.
const (
	contentTypeFHIRJSON  = "application/fhir+json;charset=utf-8"
	contentTypePlainJSON = "application/json"
)

// operationOutcome is a FHIR OperationOutcome with the fields HAPI writes for Pathling's errors
// and informational replies, in HAPI's element order.
type operationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []issue `json:"issue"`
}

type issue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
}

func outcome(severity, code, diagnostics string) operationOutcome {
	return operationOutcome{
		ResourceType: "OperationOutcome",
		Issue:        []issue{{Severity: severity, Code: code, Diagnostics: diagnostics}},
	}
}

// compactJSON encodes v the way HAPI does: compact, no trailing newline, and without Go's
// HTML escaping of <, > and & (HAPI leaves them alone).
func compactJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the emulator's own types are encoded here; failing to encode one is a bug.
		panic("pathling: encode response: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// writeFHIR writes v as compact FHIR JSON with the given status.
func writeFHIR(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", contentTypeFHIRJSON)
	w.WriteHeader(status)
	_, _ = w.Write(compactJSON(v))
}

// writeError writes Pathling's error shape: one issue, severity error, code processing
// (forbidden for 403).
func writeError(w http.ResponseWriter, status int, diagnostics string) {
	code := "processing"
	if status == http.StatusForbidden {
		code = "forbidden"
	}
	writeFHIR(w, status, outcome("error", code, diagnostics))
}

// writeInfo writes an informational OperationOutcome, as Pathling does for 202 replies.
func writeInfo(w http.ResponseWriter, status int, diagnostics string) {
	writeFHIR(w, status, outcome("information", "informational", diagnostics))
}

// parameters is a FHIR Parameters resource as the emulator writes it.
type parameters struct {
	ResourceType string      `json:"resourceType"`
	Parameter    []parameter `json:"parameter,omitempty"`
}

type parameter struct {
	Name        string      `json:"name"`
	ValueString string      `json:"valueString,omitempty"`
	ValueURL    string      `json:"valueUrl,omitempty"`
	Part        []parameter `json:"part,omitempty"`
}
