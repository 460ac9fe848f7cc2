package messages

import (
	"net/url"
	"strings"
)

// RedactURL returns a URL fit for display: in an event, a log line, a span
// attribute, a status output or an error message. It drops the userinfo
// (https://user:secret@host), the query (?access_token=...) and the fragment,
// where credentials hide, and leaves the rest as given. It works on the
// text, so that a value that does not even parse loses them too.
func RedactURL(raw string) string {
	s := strings.TrimSpace(raw)
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	start := 0
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	end := len(s)
	if j := strings.IndexByte(s[start:], '/'); j >= 0 {
		end = start + j
	}
	if _, err := url.Parse(s); err != nil {
		end = len(s) // unparseable: a '/' may hide in a password, so the last '@' anywhere counts
	}
	if at := strings.LastIndex(s[start:end], "@"); at >= 0 {
		s = s[:start] + s[start+at+1:]
	}
	return s
}
