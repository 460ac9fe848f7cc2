package source

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// The control API (/_source/) lets tests outside Go drive the source. It is unauthenticated,
// speaks plain JSON and answers errors as {"error": "..."}.

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, "application/json", map[string]string{"error": msg})
}

// handleControlTypes: GET /_source/resources -> {"types": {"Patient": 10, ...}} (current counts).
func (s *Server) handleControlTypes(w http.ResponseWriter, r *http.Request) {
	counts := map[string]int{}
	for _, t := range s.Types() {
		current, _ := s.versions(t)
		counts[t] = len(current)
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]any{"types": counts})
}

// handleControlList: GET /_source/resources/{type} -> current ids and versions, and tombstones.
func (s *Server) handleControlList(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if !r4ResourceTypes[typ] {
		controlError(w, http.StatusNotFound, "unknown resource type "+typ)
		return
	}
	current, deleted := s.versions(typ)
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"type": typ, "total": len(current), "resources": current, "deleted": deleted,
	})
}

// handleControlGet: GET /_source/resources/{type}/{id} -> the current resource.
func (s *Server) handleControlGet(w http.ResponseWriter, r *http.Request) {
	body, ok := s.Get(r.PathValue("type"), r.PathValue("id"))
	if !ok {
		controlError(w, http.StatusNotFound, "no current resource "+r.PathValue("type")+"/"+r.PathValue("id"))
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	_, _ = w.Write(body)
}

// handleControlPut: PUT /_source/resources/{type}/{id} with a resource body -> 201 (created) or
// 200 (updated) with the stored resource. resourceType and id may be omitted from the body.
func (s *Server) handleControlPut(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		controlError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	rec, created, err := s.put(body, r.PathValue("type"), r.PathValue("id"))
	if err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_, _ = w.Write(rec.body)
}

// handleControlDelete: DELETE /_source/resources/{type}/{id} -> 204, or 404.
func (s *Server) handleControlDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Delete(r.PathValue("type"), r.PathValue("id")); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrNotFound) {
			status = http.StatusNotFound
		}
		controlError(w, status, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleControlReset: POST /_source/reset -> 204.
func (s *Server) handleControlReset(w http.ResponseWriter, r *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// handleControlCounters: GET /_source/counters -> Counters.
func (s *Server) handleControlCounters(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, "application/json", s.Counters())
}

// handleControlExports: GET /_source/exports -> {"exports": [ExportInfo...]}.
func (s *Server) handleControlExports(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, "application/json", map[string]any{"exports": s.Exports()})
}

// handleControlAddFault: POST /_source/faults with a Fault -> 204.
func (s *Server) handleControlAddFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		controlError(w, http.StatusBadRequest, "body must be a fault: "+err.Error())
		return
	}
	if err := s.InjectFault(f); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleControlClearFaults: DELETE /_source/faults -> 204.
func (s *Server) handleControlClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}
