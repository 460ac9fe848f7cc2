package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"
)

// Errors returned by the Go-side store helpers.
var (
	// ErrNotFound: the resource does not exist (or is deleted).
	ErrNotFound = errors.New("source: resource not found")
	// ErrInvalidResource: the resource is not a JSON object with a known R4 resourceType and a
	// valid id.
	ErrInvalidResource = errors.New("source: invalid resource")
)

// instantLayout is how the server writes instants: UTC with millisecond precision, the form
// Pathling also uses for _since and _until.
const instantLayout = "2006-01-02T15:04:05.000Z07:00"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// record is one version of one resource. Records are immutable once stored: a change stores a
// new record, so an export can keep pointers to the records of its snapshot while the store
// moves on.
type record struct {
	typ         string
	id          string
	version     int64
	lastUpdated time.Time // for a tombstone, the time of deletion
	body        []byte    // compact JSON with meta.versionId and meta.lastUpdated; nil for a tombstone
}

func (r *record) isDeleted() bool { return r.body == nil }

// stampLocked returns the meta.lastUpdated of a new write: the clock, truncated to
// milliseconds, but never before the previous write and always strictly after the latest
// export snapshot. That keeps "lastUpdated <= transactionTime" an exact test of "was in the
// snapshot", even with a frozen or backward-jumping clock, and stamps only run ahead of the
// clock when writes and kick-offs interleave within one millisecond. The caller holds s.mu.
func (s *Server) stampLocked() time.Time {
	t := s.now()
	if t.Before(s.lastWrite) {
		t = s.lastWrite
	}
	if !t.After(s.lastSnapshot) {
		t = s.lastSnapshot.Add(time.Millisecond)
	}
	s.lastWrite = t
	return t
}

// snapshotTimeLocked returns the transactionTime of a new export: the clock, but never before
// the latest write or snapshot. Writes after it get strictly later stamps. The caller holds s.mu.
func (s *Server) snapshotTimeLocked() time.Time {
	t := s.now()
	if t.Before(s.lastWrite) {
		t = s.lastWrite
	}
	if t.Before(s.lastSnapshot) {
		t = s.lastSnapshot
	}
	s.lastSnapshot = t
	return t
}

// now reads the configured clock, in UTC, truncated to milliseconds.
func (s *Server) now() time.Time {
	return s.clock().UTC().Truncate(time.Millisecond)
}

// Put creates or updates a resource (its resourceType and id are taken from the JSON). The
// stored copy gets meta.versionId (1 on create, previous + 1 on update, also after a delete)
// and meta.lastUpdated (now); other meta elements are kept.
// It returns ErrInvalidResource (wrapped) for bad input.
func (s *Server) Put(resource json.RawMessage) error {
	_, _, err := s.put(resource, "", "")
	return err
}

// put stores resource; wantType and wantID, when set, must match (or fill) the body's values.
// It reports whether the resource was created (no current version existed).
func (s *Server) put(resource []byte, wantType, wantID string) (*record, bool, error) {
	obj, err := decodeObject(resource)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrInvalidResource, err)
	}
	typ, _ := obj["resourceType"].(string)
	id, _ := obj["id"].(string)
	if wantType != "" {
		if typ == "" {
			typ = wantType
		} else if typ != wantType {
			return nil, false, fmt.Errorf("%w: resourceType %q does not match %q", ErrInvalidResource, typ, wantType)
		}
	}
	if wantID != "" {
		if id == "" {
			id = wantID
		} else if id != wantID {
			return nil, false, fmt.Errorf("%w: id %q does not match %q", ErrInvalidResource, id, wantID)
		}
	}
	if !r4ResourceTypes[typ] {
		return nil, false, fmt.Errorf("%w: unknown resourceType %q", ErrInvalidResource, typ)
	}
	if !idPattern.MatchString(id) {
		return nil, false, fmt.Errorf("%w: id %q is not a valid FHIR id", ErrInvalidResource, id)
	}
	meta := map[string]any{}
	if m, ok := obj["meta"]; ok {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("%w: meta is not an object", ErrInvalidResource)
		}
		meta = mm
	}
	obj["resourceType"] = typ
	obj["id"] = id
	obj["meta"] = meta

	s.mu.Lock()
	defer s.mu.Unlock()
	byID := s.resources[typ]
	if byID == nil {
		byID = map[string]*record{}
		s.resources[typ] = byID
	}
	var version int64 = 1
	prev := byID[id]
	if prev != nil {
		version = prev.version + 1
	}
	stamp := s.stampLocked()
	meta["versionId"] = fmt.Sprint(version)
	meta["lastUpdated"] = stamp.Format(instantLayout)
	body, err := encodeResource(obj)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrInvalidResource, err)
	}
	rec := &record{typ: typ, id: id, version: version, lastUpdated: stamp, body: body}
	byID[id] = rec
	s.counters.ResourceWrites++
	return rec, prev == nil || prev.isDeleted(), nil
}

// Delete deletes a current resource: it disappears from exports and, for exports with a
// _since before now, appears in the manifest's deleted list. The deletion takes a new
// version. It returns ErrNotFound when there is no current resource with that type and id.
func (s *Server) Delete(typ, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.resources[typ][id]
	if prev == nil || prev.isDeleted() {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, typ, id)
	}
	s.resources[typ][id] = &record{typ: typ, id: id, version: prev.version + 1, lastUpdated: s.stampLocked()}
	s.counters.ResourceDeletes++
	return nil
}

// Get returns the current version of a resource, as exports serve it.
func (s *Server) Get(typ, id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.resources[typ][id]
	if rec == nil || rec.isDeleted() {
		return nil, false
	}
	return bytes.Clone(rec.body), true
}

// Resources returns the current resources of a type by id (copies; deleted ones excluded).
func (s *Server) Resources(typ string) map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]json.RawMessage{}
	for id, rec := range s.resources[typ] {
		if !rec.isDeleted() {
			out[id] = bytes.Clone(rec.body)
		}
	}
	return out
}

// Types returns the resource types that currently hold at least one resource, sorted.
func (s *Server) Types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var types []string
	for typ, byID := range s.resources {
		for _, rec := range byID {
			if !rec.isDeleted() {
				types = append(types, typ)
				break
			}
		}
	}
	sort.Strings(types)
	return types
}

// typesWithHistoryLocked returns every type with a current resource or a tombstone, sorted:
// what an export without _type covers. The caller holds s.mu.
func (s *Server) typesWithHistoryLocked() []string {
	types := make([]string, 0, len(s.resources))
	for typ, byID := range s.resources {
		if len(byID) > 0 {
			types = append(types, typ)
		}
	}
	sort.Strings(types)
	return types
}

// ResourceVersion describes one resource (or tombstone) for the control API.
type ResourceVersion struct {
	ID          string `json:"id"`
	VersionID   string `json:"versionId"`
	LastUpdated string `json:"lastUpdated"`
}

// versions lists the current resources and the tombstones of a type, sorted by id.
func (s *Server) versions(typ string) (current, deleted []ResourceVersion) {
	s.mu.Lock()
	defer s.mu.Unlock()
	current, deleted = []ResourceVersion{}, []ResourceVersion{}
	for _, rec := range s.resources[typ] {
		v := ResourceVersion{ID: rec.id, VersionID: fmt.Sprint(rec.version), LastUpdated: rec.lastUpdated.Format(instantLayout)}
		if rec.isDeleted() {
			deleted = append(deleted, v)
		} else {
			current = append(current, v)
		}
	}
	sort.Slice(current, func(i, j int) bool { return current[i].ID < current[j].ID })
	sort.Slice(deleted, func(i, j int) bool { return deleted[i].ID < deleted[j].ID })
	return current, deleted
}

// decodeObject parses a JSON object, keeping numbers exactly as written.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	return obj, nil
}

// encodeResource writes a resource as one line of compact JSON, resourceType first (FHIR
// convention), the other keys sorted, without HTML escaping.
func encodeResource(obj map[string]any) ([]byte, error) {
	typ, hasType := obj["resourceType"]
	rest := make(map[string]any, len(obj))
	for k, v := range obj {
		if k != "resourceType" {
			rest[k] = v
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rest); err != nil {
		return nil, err
	}
	body := bytes.TrimRight(buf.Bytes(), "\n")
	if !hasType {
		return body, nil
	}
	buf2 := bytes.Buffer{}
	enc2 := json.NewEncoder(&buf2)
	enc2.SetEscapeHTML(false)
	if err := enc2.Encode(typ); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(body)+32)
	out = append(out, `{"resourceType":`...)
	out = append(out, bytes.TrimRight(buf2.Bytes(), "\n")...)
	if len(body) > 2 { // body is "{...}"; "{}" has no other keys
		out = append(out, ',')
		out = append(out, body[1:]...)
	} else {
		out = append(out, '}')
	}
	return out, nil
}
