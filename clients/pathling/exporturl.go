package pathling

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ExportURLStyle is what a Pathling target expects in exportUrl.
type ExportURLStyle int

const (
	// ExportURLBase sends the source's FHIR base (https://s/fhir): what
	// Pathling's code expects, since it appends "/$export" itself.
	ExportURLBase ExportURLStyle = iota
	// ExportURLEndpoint sends the $export endpoint (https://s/fhir/$export),
	// as Pathling's docs and the seed's sync.sh do.
	ExportURLEndpoint
)

// ErrInvalidExportURL is returned (wrapped) by NormalizeExportURL.
var ErrInvalidExportURL = errors.New("pathling: invalid export URL")

// exportSuffixes are the spellings of a trailing $export path segment.
var exportSuffixes = []string{"/$export", "/%24export"}

// NormalizeExportURL returns raw in the export URL style this Pathling
// expects (WithExportURLStyle); see the function NormalizeExportURL. Errors
// wrap ErrInvalidExportURL.
func (c *Client) NormalizeExportURL(raw string) (string, error) {
	return NormalizeExportURL(raw, c.exportStyle)
}

// NormalizeExportURL accepts a source URL given either as the FHIR base or as
// its $export endpoint and returns it in the given style: ExportURLBase
// strips a trailing "/$export" (or "/%24export"); ExportURLEndpoint makes sure
// it ends with "/$export". Trailing slashes are dropped and the scheme and
// host lowercased. The URL must be absolute http(s) with a host, and carry no
// userinfo, query or fragment (Pathling appends to it as a string).
// Errors wrap ErrInvalidExportURL.
func NormalizeExportURL(raw string, style ExportURLStyle) (string, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: not a URL", ErrInvalidExportURL)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return "", fmt.Errorf("%w: must be an absolute http(s) URL", ErrInvalidExportURL)
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("%w: must have a host", ErrInvalidExportURL)
	case u.User != nil:
		return "", fmt.Errorf("%w: must not contain userinfo", ErrInvalidExportURL)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("%w: must not contain a query", ErrInvalidExportURL)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", fmt.Errorf("%w: must not contain a fragment", ErrInvalidExportURL)
	}

	path := strings.TrimRight(u.EscapedPath(), "/")
	for _, suffix := range exportSuffixes {
		if len(path) >= len(suffix) && strings.EqualFold(path[len(path)-len(suffix):], suffix) {
			path = strings.TrimRight(path[:len(path)-len(suffix)], "/")
			break
		}
	}
	if style == ExportURLEndpoint {
		path += "/$export"
	}
	return scheme + "://" + strings.ToLower(u.Host) + path, nil
}
