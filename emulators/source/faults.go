package source

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// FaultStage names where an injected fault strikes.
type FaultStage string

// Fault stages.
const (
	// StageKickOff: the next kick-offs are answered with the fault's status.
	StageKickOff FaultStage = "kickoff"
	// StageStatus: the next status polls (of any export) are answered with the fault's status;
	// the exports themselves carry on (a transient polling error).
	StageStatus FaultStage = "status"
	// StageExport: the next exports kicked off fail: once they would have completed, their
	// status URL answers with the fault's status for good.
	StageExport FaultStage = "export"
	// StageDownload: the next file downloads are answered with the fault's status.
	StageDownload FaultStage = "download"
)

// ErrInvalidFault is returned by InjectFault for a fault it cannot apply.
var ErrInvalidFault = errors.New("source: invalid fault")

// Fault is an injected failure, for testing how clients cope with a misbehaving source.
type Fault struct {
	Stage FaultStage `json:"stage"`
	// Status is the HTTP status to answer with, 400-599.
	Status int `json:"status"`
	// Count is how many requests (or exports, for StageExport) it applies to; 0 means 1.
	Count int `json:"count,omitempty"`
	// RetryAfter, when positive, is sent as a Retry-After header (whole seconds), e.g. with 429.
	RetryAfter time.Duration `json:"-"`
	// RetryAfterSeconds is RetryAfter for the JSON control API.
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
	// Diagnostics is the OperationOutcome's text; a default names the stage.
	Diagnostics string `json:"diagnostics,omitempty"`
}

// InjectFault queues a fault. Faults of one stage apply in the order injected. It returns an
// error wrapping ErrInvalidFault for an unknown stage or a status outside 400-599.
func (s *Server) InjectFault(f Fault) error {
	switch f.Stage {
	case StageKickOff, StageStatus, StageExport, StageDownload:
	default:
		return fmt.Errorf("%w: unknown stage %q", ErrInvalidFault, f.Stage)
	}
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("%w: status %d is not an error status", ErrInvalidFault, f.Status)
	}
	if f.Count < 0 {
		return fmt.Errorf("%w: negative count", ErrInvalidFault)
	}
	if f.Count == 0 {
		f.Count = 1
	}
	if f.RetryAfter <= 0 && f.RetryAfterSeconds > 0 {
		f.RetryAfter = time.Duration(f.RetryAfterSeconds) * time.Second
	}
	if f.Diagnostics == "" {
		f.Diagnostics = fmt.Sprintf("injected %s fault", f.Stage)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
	return nil
}

// ClearFaults drops every pending fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFaultLocked consumes one application of the first pending fault of a stage. The caller
// holds s.mu.
func (s *Server) takeFaultLocked(stage FaultStage) *Fault {
	for i := range s.faults {
		if s.faults[i].Stage != stage {
			continue
		}
		f := s.faults[i]
		s.faults[i].Count--
		if s.faults[i].Count <= 0 {
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
		}
		s.counters.FaultsServed++
		return &f
	}
	return nil
}

// serveFault answers with the next pending fault of a stage, if any, and reports whether it did.
func (s *Server) serveFault(w http.ResponseWriter, stage FaultStage) bool {
	s.mu.Lock()
	f := s.takeFaultLocked(stage)
	s.mu.Unlock()
	if f == nil {
		return false
	}
	f.write(w)
	return true
}

// write answers with the fault: its status, an optional Retry-After, an OperationOutcome.
func (f *Fault) write(w http.ResponseWriter) {
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(f.RetryAfter))
	}
	code := "exception"
	switch {
	case f.Status == http.StatusTooManyRequests:
		code = "throttled"
	case f.Stage == StageExport:
		code = "exception" // the export failed for good
	case f.Status >= 500:
		code = "transient"
	}
	writeOutcome(w, f.Status, "error", code, f.Diagnostics)
}
