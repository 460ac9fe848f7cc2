package pathling

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// warehousePath is where Pathling's Docker image keeps its Delta tables
// (pathling.storage.warehouseUrl/databaseName); it appears in staged file URLs and in the
// error of the "error" save mode.
const warehousePath = "file:///usr/share/warehouse/default"

// row is one stored resource.
type row struct {
	id  string
	raw json.RawMessage
}

// store is the in-memory stand-in for Pathling's Delta tables: one table per resource type.
// It survives Restart (Pathling's tables are on disk); Reset empties it.
type store struct {
	mu        sync.RWMutex
	tables    map[string][]row
	lastWrite time.Time // the "database version": latest write to any table
}

func newStore() *store {
	return &store{tables: map[string][]row{}}
}

// version is the database version part of the job key, formatted like Pathling's
// CacheableDatabase key (epoch millis in base 36); "" when nothing was ever written.
func (s *store) version() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lastWrite.IsZero() {
		return ""
	}
	return strconv.FormatInt(s.lastWrite.UnixMilli(), 36)
}

// touch records a write at t without changing any table (a scripted job that "imported").
func (s *store) touch(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.After(s.lastWrite) {
		s.lastWrite = t
	}
}

// saveModeError is the failure of the "error" save mode on an existing table, worded like
// Delta Lake's DELTA_PATH_EXISTS.
type saveModeError struct{ resourceType string }

func (e *saveModeError) Error() string {
	// Hadoop prints the warehouse path as file:/..., not file:///...
	return fmt.Sprintf("[DELTA_PATH_EXISTS] Cannot write to already existent path %s/%s.parquet without setting OVERWRITE = 'true'.",
		strings.Replace(warehousePath, "file:///", "file:/", 1), e.resourceType)
}

// apply writes rows of one resource type with the save mode, as Pathling's DeltaSink does.
// It reports whether the table was written.
func (s *store) apply(mode, resourceType string, rows []row, now time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	existing, exists := s.tables[resourceType]
	switch mode {
	case SaveModeMerge:
		if !exists {
			s.tables[resourceType] = append([]row(nil), rows...)
			break
		}
		index := make(map[string]int, len(existing))
		for i, r := range existing {
			index[r.id] = i
		}
		for _, r := range rows {
			if i, ok := index[r.id]; ok {
				existing[i] = r
				continue
			}
			index[r.id] = len(existing)
			existing = append(existing, r)
		}
		s.tables[resourceType] = existing
	case SaveModeOverwrite:
		s.tables[resourceType] = append([]row(nil), rows...)
	case SaveModeAppend:
		s.tables[resourceType] = append(existing, rows...)
	case SaveModeIgnore:
		if exists {
			return false, nil
		}
		s.tables[resourceType] = append([]row(nil), rows...)
	case SaveModeError:
		if exists {
			return false, &saveModeError{resourceType: resourceType}
		}
		s.tables[resourceType] = append([]row(nil), rows...)
	default:
		return false, failure("Unexpected save mode: " + mode)
	}
	if s.tables[resourceType] == nil {
		// An empty file still creates the table.
		s.tables[resourceType] = []row{}
	}
	if now.After(s.lastWrite) {
		s.lastWrite = now
	}
	return true, nil
}

func (s *store) rows(resourceType string) ([]row, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rs, ok := s.tables[resourceType]
	return append([]row(nil), rs...), ok
}

func (s *store) types() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.tables))
	for t := range s.tables {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (s *store) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables = map[string][]row{}
	s.lastWrite = time.Time{}
}

// parseNDJSON splits an NDJSON file into rows. Blank lines are skipped; a line that is not a
// JSON object fails the import, as Pathling's NDJSON reader would.
func parseNDJSON(data []byte) ([]row, error) {
	var out []row
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var head struct {
			ID string `json:"id"`
		}
		if !json.Valid(b) || b[0] != '{' {
			return nil, failure(fmt.Sprintf("Malformed NDJSON at line %d", line))
		}
		if err := json.Unmarshal(b, &head); err != nil {
			return nil, failure(fmt.Sprintf("Malformed NDJSON at line %d: %v", line, err))
		}
		out = append(out, row{id: head.ID, raw: append(json.RawMessage(nil), b...)})
	}
	if err := sc.Err(); err != nil {
		return nil, failure(fmt.Sprintf("Malformed NDJSON: %v", err))
	}
	return out, nil
}
