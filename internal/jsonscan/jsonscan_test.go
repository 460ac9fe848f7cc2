package jsonscan

import (
	"encoding/json"
	"testing"
)

func TestValueSkipsExactlyOneValue(t *testing.T) {
	for _, v := range []string{
		`"a"`, `"a\"b\\"`, `12.5e3`, `-1`, `true`, `false`, `null`, `{}`, `[]`,
		`{"a":[1,"]",{"b":null}],"c":"}"}`, `[ 1 , [ 2 , { "x" : "y" } ] ]`,
	} {
		for _, after := range []string{"", ",", "}", "]", " ,"} {
			b := []byte(v + after)
			if got := Value(b, 0); got != len(v) {
				t.Errorf("Value(%q) = %d, want %d", b, got, len(v))
			}
		}
	}
}

func FuzzValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":"c"}]}`, `"x\u0041"`, `[true,false,null]`, `-0.5E+7`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		// A valid text is one value, possibly with space around it.
		b := []byte(s)
		i := 0
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
		end := Value(b, i)
		if !json.Valid(b[i:end]) {
			t.Fatalf("Value(%q) stopped at %d: %q is not one value", s, end, b[i:end])
		}
		for _, c := range b[end:] {
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				t.Fatalf("Value(%q) stopped at %d, before the end of the value", s, end)
			}
		}
	})
}
