package messages_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pathling-sync/pathling-sync/messages"
)

// FuzzDecodeRequested: DecodeRequested never panics; what it accepts the schema accepts too, and
// re-encoding an accepted request decodes to the same value.
func FuzzDecodeRequested(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", messages.SchemaRequested, "*", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{``, ` `, `{}`, `[]`, `null`, `{"a":1}`, `{"types":[null]}`, `{"since":"auto","until":"2025-01-01T00:00:00Z"}`,
		`{"exportUrl":"https://u:p@h/x"}`, `{"timeout":"+1h"}`, `{"saveMode":"merge","saveMode":"merge"}`, "{\"requestedBy\":\"\u2028\"}",
		`{"since":"2025-01-01T00:00:00.123456789+14:00","until":"2025-01-01T00:00:00Z"}`, `{} `, `{}{}`} {
		f.Add([]byte(s))
	}
	sch := compileSchema(f, messages.SchemaRequested)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := messages.DecodeRequested(body)
		if err != nil {
			var ve *messages.ValidationError
			if !errors.Is(err, messages.ErrInvalidRequest) || !errors.As(err, &ve) || err.Error() == "" {
				t.Fatalf("error %#v for %q is not a ValidationErrors", err, body)
			}
			return
		}
		if err := validateJSON(t, sch, body); err != nil {
			t.Fatalf("DecodeRequested accepts what the schema rejects: %q: %v", body, err)
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted request fails Validate: %v", err)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if len(again) > messages.MaxRequestBytes {
			t.Skip("re-encoding grew past the size limit (escaped characters)")
		}
		back, err := messages.DecodeRequested(again)
		if err != nil {
			t.Fatalf("re-encoded request rejected: %s: %v", again, err)
		}
		if !reflect.DeepEqual(back, req) {
			t.Fatalf("round trip changed the request:\n%#v\n%#v", req, back)
		}
	})
}

// FuzzEnvelope: an envelope written into NATS headers reads back as itself.
func FuzzEnvelope(f *testing.F) {
	f.Add("id-1", "pathling-sync", messages.TypeRequested, "default", "", "00-a-b-01", "k=v", int64(1738368000123456789))
	f.Add("", "", "", "", "text/plain", "", "", int64(0))
	f.Add("a/completed", "s", messages.TypeFailed, "t", "application/json", "", "", int64(-1))
	f.Fuzz(func(t *testing.T, id, source, typ, subject, contentType, traceParent, traceState string, unixNano int64) {
		env := messages.Envelope{ID: id, Source: source, Type: typ, Subject: subject, ContentType: contentType,
			Time: time.Unix(0, unixNano), TraceParent: traceParent, TraceState: traceState}
		h := nats.Header{}
		env.WriteTo(h)
		if h.Get(messages.HeaderNatsMsgID) != id {
			t.Fatalf("Nats-Msg-Id %q, ce-id %q", h.Get(messages.HeaderNatsMsgID), id)
		}
		got, ok := messages.ReadEnvelope(h)
		if !ok {
			t.Fatal("ReadEnvelope ok = false")
		}
		if !got.Time.Equal(env.Time) {
			t.Fatalf("time %v, want %v", got.Time, env.Time)
		}
		want := env
		if want.ContentType == "" {
			want.ContentType = messages.ContentTypeJSON
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if got != want {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	})
}
