package pathling

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// serveControl is the JSON control API under /_emulator/ (documented in README.md). It needs
// no token: bind the emulator to loopback.
func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request, path string) {
	route := r.Method + " " + path
	switch {
	case route == "GET " || route == "GET index":
		writeJSON(w, http.StatusOK, map[string]any{
			"mode": e.cfg.Mode.String(),
			"endpoints": []string{
				"GET /_emulator/counters", "GET /_emulator/jobs", "GET /_emulator/scripts",
				"PUT /_emulator/script", "POST /_emulator/scripts", "DELETE /_emulator/scripts",
				"POST /_emulator/inject", "GET /_emulator/injections", "DELETE /_emulator/injections",
				"POST /_emulator/restart", "POST /_emulator/reset",
				"GET /_emulator/store", "GET /_emulator/store/{type}",
			},
		})
	case route == "GET counters":
		writeJSON(w, http.StatusOK, e.Counters())
	case route == "GET jobs":
		writeJSON(w, http.StatusOK, map[string]any{"jobs": e.Jobs()})
	case route == "GET scripts":
		e.mu.Lock()
		out := map[string]any{"default": e.scripts.def, "byExportUrl": e.scripts.byURL}
		body := compactJSON(out)
		e.mu.Unlock()
		writeRawJSON(w, http.StatusOK, body)
	case route == "PUT script":
		var s Script
		if !readJSON(w, r, &s) {
			return
		}
		if err := e.SetDefaultScript(s); err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case route == "POST scripts":
		var s Script
		if !readJSON(w, r, &s) {
			return
		}
		if err := e.Script(s); err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case route == "DELETE scripts":
		e.ClearScripts()
		w.WriteHeader(http.StatusNoContent)
	case route == "POST inject":
		var in Injection
		if !readJSON(w, r, &in) {
			return
		}
		if err := e.Inject(in); err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case route == "GET injections":
		writeJSON(w, http.StatusOK, map[string]any{"injections": e.PendingInjections()})
	case route == "DELETE injections":
		e.ClearInjections()
		w.WriteHeader(http.StatusNoContent)
	case route == "POST restart":
		e.Restart()
		w.WriteHeader(http.StatusNoContent)
	case route == "POST reset":
		e.Reset()
		w.WriteHeader(http.StatusNoContent)
	case route == "GET store":
		types := map[string]int{}
		for _, t := range e.store.types() {
			types[t] = e.ResourceCount(t)
		}
		writeJSON(w, http.StatusOK, map[string]any{"types": types, "version": e.store.version()})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "store/"):
		t := strings.TrimPrefix(path, "store/")
		rows, ok := e.store.rows(t)
		if !ok {
			writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no table for %q", t))
			return
		}
		res := make([]json.RawMessage, 0, len(rows))
		for _, row := range rows {
			res = append(res, row.raw)
		}
		writeJSON(w, http.StatusOK, map[string]any{"resourceType": t, "count": len(rows), "resources": res})
	default:
		writeJSONError(w, http.StatusNotFound, "no such control endpoint: "+r.Method+" /_emulator/"+path)
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "read body: "+err.Error())
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSONError(w, http.StatusBadRequest, "decode body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeRawJSON(w, status, compactJSON(v))
}

func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
