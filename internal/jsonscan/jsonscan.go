// Package jsonscan walks a JSON text already known to be valid (json.Valid),
// for the one-pass readers of the hot path (clients/pathling's import result,
// messages' SyncRequested): they read the fields they know with their own
// methods on a Scanner and skip the rest without decoding it.
package jsonscan

// Scanner is a position I in a valid JSON text B.
type Scanner struct {
	B []byte
	I int
}

// WS skips white space.
func (s *Scanner) WS() {
	for s.I < len(s.B) && (s.B[s.I] == ' ' || s.B[s.I] == '\t' || s.B[s.I] == '\n' || s.B[s.I] == '\r') {
		s.I++
	}
}

// Consume skips white space and c if c is next.
func (s *Scanner) Consume(c byte) bool {
	s.WS()
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Skip skips white space and one value.
func (s *Scanner) Skip() {
	s.WS()
	s.I = Value(s.B, s.I)
}

// Value returns the index just past the JSON value that starts at b[i] (no
// space before it). b must be valid JSON: Value checks nothing.
func Value(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			i++
			for b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case '{', '[':
			depth++
			i++
			continue
		case '}', ']':
			depth--
			i++
		case ',', ':', ' ', '\t', '\n', '\r': // only inside a container
			i++
			continue
		default: // a number, true, false or null
			for i < len(b) && !endOfLiteral(b[i]) {
				i++
			}
		}
		if depth == 0 {
			return i
		}
	}
	return i
}

func endOfLiteral(c byte) bool {
	return c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}
