package pathling

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"

	"github.com/google/uuid"
)

var resourceTypeName = regexp.MustCompile(`^[A-Z][A-Za-z]+$`)

// handleMetadata is GET /fhir/metadata: a CapabilityStatement listing the operations. Pathling
// serves it without a token.
func (e *Emulator) handleMetadata(w http.ResponseWriter, r *http.Request) {
	type operation struct {
		Name       string `json:"name"`
		Definition string `json:"definition"`
	}
	type interaction struct {
		Code string `json:"code"`
	}
	type resource struct {
		Type        string        `json:"type"`
		Interaction []interaction `json:"interaction"`
	}
	type coding struct {
		System string `json:"system"`
		Code   string `json:"code"`
	}
	type concept struct {
		Coding []coding `json:"coding"`
	}
	type security struct {
		Cors    bool      `json:"cors"`
		Service []concept `json:"service,omitempty"`
	}
	type rest struct {
		Mode      string      `json:"mode"`
		Security  *security   `json:"security,omitempty"`
		Resource  []resource  `json:"resource,omitempty"`
		Operation []operation `json:"operation"`
	}
	type software struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	type implementation struct {
		Description string `json:"description"`
		URL         string `json:"url"`
	}
	type capabilityStatement struct {
		ResourceType   string         `json:"resourceType"`
		Status         string         `json:"status"`
		Date           string         `json:"date"`
		Publisher      string         `json:"publisher"`
		Kind           string         `json:"kind"`
		Software       software       `json:"software"`
		Implementation implementation `json:"implementation"`
		FHIRVersion    string         `json:"fhirVersion"`
		Format         []string       `json:"format"`
		Rest           []rest         `json:"rest"`
	}
	const opBase = "https://pathling.csiro.au/fhir/OperationDefinition/"
	rs := rest{
		Mode: "server",
		Operation: []operation{
			{Name: "import-pnp", Definition: opBase + "import-pnp"},
			{Name: "job", Definition: opBase + "job"},
		},
	}
	if e.cfg.Auth != nil {
		rs.Security = &security{Cors: true, Service: []concept{{Coding: []coding{{
			System: "http://terminology.hl7.org/CodeSystem/restful-security-service", Code: "SMART-on-FHIR"}}}}}
	}
	for _, t := range e.store.types() {
		rs.Resource = append(rs.Resource, resource{Type: t, Interaction: []interaction{{Code: "read"}, {Code: "search-type"}}})
	}
	writeFHIR(w, http.StatusOK, capabilityStatement{
		ResourceType:   "CapabilityStatement",
		Status:         "active",
		Date:           formatTransactionTime(e.cfg.Clock()),
		Publisher:      "Australian e-Health Research Centre, CSIRO",
		Kind:           "instance",
		Software:       software{Name: "Pathling Server (emulator)", Version: "2.0.1"},
		Implementation: implementation{Description: "Pathling FHIR API", URL: serverBase(r)},
		FHIRVersion:    "4.0.1",
		Format:         []string{"application/fhir+json"},
		Rest:           []rest{rs},
	})
}

// handleRead serves GET /fhir/<Type> (a searchset of the whole table; _summary=count gives
// the total only) and GET /fhir/<Type>/<id>, so that tests can read back what was imported.
func (e *Emulator) handleRead(w http.ResponseWriter, r *http.Request, rest string) {
	caller, err := e.authenticate(r)
	if err != nil {
		writeUnauthorized(w, err)
		return
	}
	resourceType, id, hasID := strings.Cut(rest, "/")
	if !resourceTypeName.MatchString(resourceType) || strings.Contains(id, "/") {
		writeError(w, http.StatusNotFound, "Unknown resource type '"+resourceType+"'")
		return
	}
	if r.Method != http.MethodGet {
		e.methodNotAllowed(w, r, resourceType, http.MethodGet)
		return
	}
	if !caller.has("pathling:read:" + resourceType) {
		writeError(w, http.StatusForbidden, missingAuthority("pathling:read:"+resourceType))
		return
	}
	rows, _ := e.store.rows(resourceType)
	if hasID {
		for i := len(rows) - 1; i >= 0; i-- {
			if rows[i].id == id {
				w.Header().Set("Content-Type", contentTypeFHIRJSON)
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(rows[i].raw)
				return
			}
		}
		writeError(w, http.StatusNotFound, "Resource "+resourceType+"/"+id+" is not known")
		return
	}
	type entry struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
	}
	type bundle struct {
		ResourceType string  `json:"resourceType"`
		ID           string  `json:"id"`
		Type         string  `json:"type"`
		Total        int     `json:"total"`
		Entry        []entry `json:"entry,omitempty"`
	}
	b := bundle{ResourceType: "Bundle", ID: uuid.NewString(), Type: "searchset", Total: len(rows)}
	if r.URL.Query().Get("_summary") != "count" {
		base := serverBase(r)
		for _, row := range rows {
			b.Entry = append(b.Entry, entry{FullURL: base + "/" + resourceType + "/" + row.id, Resource: row.raw})
		}
	}
	writeFHIR(w, http.StatusOK, b)
}
