package handlers

import (
	"testing"

	"github.com/pathling-sync/pathling-sync/messages"
)

// The allowed URLs parsed once at New decide as parsing them per request
// did: prefix at a path boundary, same scheme, host and port, no userinfo.
func TestExportURLAllowedParsedOnce(t *testing.T) {
	for _, tc := range []struct {
		allowed []string
		def     string
		u       string
		want    bool
	}{
		{nil, "http://src.test/fhir", "http://src.test/fhir", true},
		{nil, "http://src.test/fhir", "http://src.test/fhir/sub", true},
		{nil, "http://src.test/fhir", "http://src.test/fhirx", false},
		{nil, "http://src.test/fhir", "http://src.test:80/fhir", true},
		{nil, "http://src.test/fhir", "https://src.test/fhir", false},
		{nil, "http://src.test/fhir", "http://u:p@src.test/fhir", false},
		{nil, "", "http://src.test/fhir", false},
		{[]string{"%zz", "https://a.test/"}, "http://src.test/fhir", "https://A.test/x", true},
		{[]string{"https://a.test/base/"}, "", "https://a.test/base", true},
		{[]string{"https://a.test/base"}, "", "http://src.test/fhir", false},
	} {
		lazy := Target{AllowedExportURLs: tc.allowed, Defaults: messages.SyncRequested{ExportURL: tc.def}}
		once := lazy
		once.setDefaults()
		if got := lazy.exportURLAllowed(tc.u); got != tc.want {
			t.Errorf("allowed %v, default %q: %q allowed = %v, want %v", tc.allowed, tc.def, tc.u, got, tc.want)
		}
		if got := once.exportURLAllowed(tc.u); got != tc.want {
			t.Errorf("parsed at New: allowed %v, default %q: %q allowed = %v, want %v", tc.allowed, tc.def, tc.u, got, tc.want)
		}
	}
}
