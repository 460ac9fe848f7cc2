package messages

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"":                            "",
		"https://source.example/fhir": "https://source.example/fhir",
		"https://user:s3cret@source.example/fhir/$export":  "https://source.example/fhir/$export",
		"https://s3cret@source.example/fhir":               "https://source.example/fhir",
		"https://source.example/fhir?_token=s3cret#s3cret": "https://source.example/fhir",
		"https://source.example/fhir?":                     "https://source.example/fhir",
		"  HTTPS://user:s3cret@Source.Example:8443/fhir ":  "HTTPS://Source.Example:8443/fhir",
		"https://source.example/my fhir/@x":                "https://source.example/my fhir/@x",
		"//user:s3cret@source.example/fhir":                "//source.example/fhir",
		"user:s3cret@source.example/fhir":                  "source.example/fhir",
		"https://user:s3%zzcret@source.example/fhir":       "https://source.example/fhir",
		"https://us er:s3cret@source.example/fhir?a=s3":    "https://source.example/fhir",
		"https://user:s3/cret@source.example/fhir":         "https://source.example/fhir",
		"ftp://user:s3cret@source.example/fhir":            "ftp://source.example/fhir",
	} {
		got := RedactURL(raw)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
		if strings.Contains(got, "s3") {
			t.Errorf("RedactURL(%q) = %q keeps the secret", raw, got)
		}
	}
}
