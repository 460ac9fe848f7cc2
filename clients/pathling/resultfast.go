package pathling

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/pathling-sync/pathling-sync/internal/jsonscan"
)

// parseParametersFast reads a FHIR Parameters import result in one pass
// without encoding/json's reflection (which took two decodes and ~35
// allocations a result). It handles exactly the bodies on which it is sure
// to agree with parseImportResultJSON, and returns false for anything else:
// a plain-JSON result, a resourceType other than "Parameters", invalid
// JSON, escaped or non-ASCII keys, keys that match a field only
// case-insensitively, repeated keys, escaped or invalid UTF-8 strings
// where a value is read, null or mistyped fields, nesting deeper than
// maxFastDepth. encoding/json is then the judge.
func parseParametersFast(b []byte) (*ImportResult, bool) {
	if !json.Valid(b) { // what Unmarshal checks first; unknown values are skipped unchecked below
		return nil, false
	}
	s := scanner{jsonscan.Scanner{B: b}}
	if !s.Consume('{') {
		return nil, false
	}
	var (
		isParameters bool
		seen         uint8
		params       = -1 // offset of the parameter array
	)
	for first := true; ; first = false {
		if s.Consume('}') {
			break
		}
		if !first && !s.Consume(',') {
			return nil, false
		}
		key, ok := s.key(topKeys[:])
		if !ok {
			return nil, false
		}
		switch key {
		case -1:
			s.Skip()
			continue
		case 0: // resourceType
			v, ok := s.str()
			if !ok || string(v) != "Parameters" {
				return nil, false
			}
			isParameters = true
		case 1: // parameter
			s.WS()
			params = s.I
			if !s.paramArray(0) {
				return nil, false
			}
		}
		if seen&(1<<key) != 0 {
			return nil, false
		}
		seen |= 1 << key
	}
	if !isParameters {
		return nil, false
	}
	r := &ImportResult{}
	if params >= 0 && !s.collect(params, r) {
		return nil, false // cannot be: the same bytes passed above
	}
	r.TransactionTime = parseInstant(r.TransactionTimeRaw)
	return r, true
}

// maxFastDepth bounds the nesting of parts parseParametersFast follows.
const maxFastDepth = 32

// The keys of fhirParameters and fhirParameter, by index.
var (
	topKeys   = [...]string{"resourceType", "parameter"}
	paramKeys = [...]string{"name", "valueUrl", "valueUri", "valueCode", "valueString", "valueInstant", "valueDateTime", "part"}
)

// Indexes of the values in fastParam.values (paramKeys' index - 1).
const (
	valueURL = iota
	valueURI
	valueCode
	valueString
	valueInstant
	valueDateTime
	numValues
)

// fastParam is one Parameters.parameter (or part) as read; its strings
// point into the body.
type fastParam struct {
	name   []byte // unset is empty
	values [numValues][]byte
	set    [numValues]bool
	part   int // offset of the part array, -1 when absent
}

// first returns the first of the values that is set, as firstSet does.
func (p *fastParam) first(idx ...int) ([]byte, bool) {
	for _, i := range idx {
		if p.set[i] {
			return p.values[i], true
		}
	}
	return nil, false
}

// scanner reads JSON that json.Valid accepted.
type scanner struct{ jsonscan.Scanner }

// str reads a string without escapes in valid UTF-8 (what encoding/json
// would decode to the same bytes). The result points into the body.
func (s *scanner) str() ([]byte, bool) {
	if !s.Consume('"') {
		return nil, false
	}
	start := s.I
	for s.I < len(s.B) && s.B[s.I] != '"' {
		if s.B[s.I] == '\\' {
			return nil, false
		}
		s.I++
	}
	if s.I == len(s.B) {
		return nil, false
	}
	v := s.B[start:s.I]
	s.I++
	if !utf8.Valid(v) {
		return nil, false
	}
	return v, true
}

// key reads an object key and its colon: the index of the key in keys, -1
// for a key encoding/json ignores too; false for a key this scanner cannot
// judge (escaped, non-ASCII, or a case-insensitive match).
func (s *scanner) key(keys []string) (int, bool) {
	k, ok := s.str()
	if !ok || !s.Consume(':') {
		return 0, false
	}
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			return 0, false // encoding/json folds some non-ASCII letters (ſ, K) to ASCII
		}
	}
	for i, want := range keys {
		if string(k) == want {
			return i, true
		}
		if equalFoldASCII(k, want) {
			return 0, false
		}
	}
	return -1, true
}

// equalFoldASCII is strings.EqualFold for an ASCII k.
func equalFoldASCII(k []byte, s string) bool {
	if len(k) != len(s) {
		return false
	}
	for i := range k {
		a, b := k[i]|0x20, s[i]|0x20 // lower case for letters
		if a != b || (a < 'a' || a > 'z') && k[i] != s[i] {
			return false
		}
	}
	return true
}

// collect reads the parameter array at offset params (checked by
// paramArray) into r as parseParametersResult does.
func (s *scanner) collect(params int, r *ImportResult) bool {
	s.I = params
	var haveTime, haveRequest bool
	if !s.arrayStart() {
		return false
	}
	for first := true; ; first = false {
		done, ok := s.arrayNext(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		var p fastParam
		if !s.param(0, &p) {
			return false
		}
		switch string(p.name) {
		case "transactionTime":
			if v, ok := p.first(valueString, valueInstant, valueDateTime); ok && !haveTime {
				r.TransactionTimeRaw, haveTime = string(v), true
			}
		case "request":
			if v, ok := p.first(valueString, valueURI, valueURL); ok && !haveRequest {
				r.Request, haveRequest = string(v), true
			}
		case "output":
			if p.part >= 0 && !s.collectOutputs(p.part, r) {
				return false
			}
		}
	}
}

// collectOutputs reads an output's part array at offset part, appending
// each inputUrl to r.Outputs, and leaves s where it was.
func (s *scanner) collectOutputs(part int, r *ImportResult) bool {
	end := s.I
	defer func() { s.I = end }()
	s.I = part
	if !s.arrayStart() {
		return false
	}
	for first := true; ; first = false {
		done, ok := s.arrayNext(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		var p fastParam
		if !s.param(1, &p) {
			return false
		}
		if string(p.name) != "inputUrl" {
			continue
		}
		if v, ok := p.first(valueURL, valueURI, valueString); ok {
			r.Outputs = append(r.Outputs, string(v))
		}
	}
}

// arrayStart reads the '[' of an array; false for anything else, null
// included (encoding/json's nil slice, but also null into a repeated key's
// earlier value: left to it).
func (s *scanner) arrayStart() bool { return s.Consume('[') }

// arrayNext reads the ']' that ends an array (done) or, after the first
// element, the ',' before the next one.
func (s *scanner) arrayNext(first bool) (done, ok bool) {
	if s.Consume(']') {
		return true, true
	}
	return false, first || s.Consume(',')
}

// paramArray checks an array of parameters, recursively, and leaves s
// after it.
func (s *scanner) paramArray(depth int) bool {
	if depth > maxFastDepth || !s.arrayStart() {
		return false
	}
	for first := true; ; first = false {
		done, ok := s.arrayNext(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		var p fastParam
		if !s.param(depth, &p) {
			return false
		}
	}
}

// param reads one parameter object, checking its parts (recursively).
func (s *scanner) param(depth int, p *fastParam) bool {
	p.part = -1
	if !s.Consume('{') {
		return false
	}
	var seen uint8
	for first := true; ; first = false {
		if s.Consume('}') {
			return true
		}
		if !first && !s.Consume(',') {
			return false
		}
		key, ok := s.key(paramKeys[:])
		if !ok {
			return false
		}
		switch {
		case key == -1:
			s.Skip()
			continue
		case key == 0:
			if p.name, ok = s.str(); !ok {
				return false
			}
		case key == len(paramKeys)-1:
			s.WS()
			p.part = s.I
			if !s.paramArray(depth + 1) {
				return false
			}
		default:
			v, ok := s.str()
			if !ok {
				return false
			}
			p.values[key-1], p.set[key-1] = v, true
		}
		if seen&(1<<key) != 0 {
			return false
		}
		seen |= 1 << key
	}
}
