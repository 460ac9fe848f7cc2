package messages

import (
	"time"
	"unicode/utf8"
)

// appendJSONField appends prefix (`,"name":`) and s as a JSON string.
func appendJSONField(b []byte, prefix, s string) []byte {
	return appendJSONString(append(b, prefix...), s)
}

// appendJSONOmitEmpty is appendJSONField for an omitempty field: nothing for "".
func appendJSONOmitEmpty(b []byte, prefix, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONField(b, prefix, s)
}

// jsonTimeOK reports whether encoding/json encodes t (time.Time.MarshalJSON refuses years
// outside 0..9999).
func jsonTimeOK(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as json.Marshal writes a string: HTML-escaped (<, >, & as \u003c,
// \u003e, \u0026), control characters escaped, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
