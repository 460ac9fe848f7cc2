package main

import (
	"bytes"
	"encoding/json"

	"github.com/pathling-sync/pathling-sync/messages"
)

// redactBody returns an event body for display: its exportUrl (a requester
// may have put credentials in it, and outcomes published before the service
// redacted them may carry them back) goes through messages.RedactURL. A body
// that needs no change is returned as it is, so its field order stays.
func redactBody(data []byte) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return data
	}
	var u string
	if raw, ok := fields["exportUrl"]; !ok || json.Unmarshal(raw, &u) != nil || messages.RedactURL(u) == u {
		return data
	}
	shown, _ := json.Marshal(messages.RedactURL(u))
	fields["exportUrl"] = shown
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(fields) != nil {
		return data
	}
	return bytes.TrimSpace(b.Bytes())
}
