package pathling

import (
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// newRequest must build what http.NewRequestWithContext builds from the
// URL string (the client no longer calls it, to parse each URL once).
func TestNewRequestMatchesHTTPNewRequest(t *testing.T) {
	ctx := context.Background()
	tmpl := newRequestHeaders("ua/1").post
	for _, raw := range []string{
		"http://127.0.0.1:8080/fhir/$import-pnp",
		"https://pathling.example/fhir/$job?id=1f2e&x=%20y",
		"http://h:/fhir/$job?id=1", // empty port: dropped
		"http://[::1]:/fhir/$job",  // empty port after an IPv6 literal
		"http://[::1]/fhir",        // no port at all
		"http://h/a%2Fb/%24import-pnp",
		"HTTP://H:80/x",
	} {
		for _, body := range [][]byte{nil, {}, []byte(`{"resourceType":"Parameters"}`)} {
			var rd io.Reader
			if body != nil {
				rd = strings.NewReader(string(body))
			}
			want, err := http.NewRequestWithContext(ctx, http.MethodPost, raw, rd)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tmpl {
				want.Header[k] = v
			}
			want.Header.Set("Authorization", "Bearer tok")
			u, err := parseTarget(raw)
			if err != nil {
				t.Fatal(err)
			}
			got := newRequest(ctx, http.MethodPost, u, body, tmpl, "tok")
			if got.Method != want.Method || got.URL.String() != want.URL.String() || got.Host != want.Host ||
				got.Proto != want.Proto || got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor ||
				got.ContentLength != want.ContentLength || !reflect.DeepEqual(got.Header, want.Header) ||
				(got.Body == nil) != (want.Body == nil) || (got.Body == http.NoBody) != (want.Body == http.NoBody) ||
				(got.GetBody == nil) != (want.GetBody == nil) || got.Context() != ctx {
				t.Errorf("%s body %q:\n got %+v\nwant %+v", raw, body, got, want)
				continue
			}
			if *got.URL != *want.URL {
				t.Errorf("%s: URL %#v, want %#v", raw, *got.URL, *want.URL)
			}
			if got.GetBody != nil {
				for range 2 { // every GetBody starts over
					b, _ := got.GetBody()
					data, _ := io.ReadAll(b)
					if string(data) != string(body) {
						t.Errorf("%s: GetBody = %q, want %q", raw, data, body)
					}
				}
			}
		}
	}
	if tmpl["Authorization"] != nil {
		t.Fatal("the header template was modified")
	}
}

// A 307 makes net/http send the kick-off again, body included (GetBody).
func TestKickOffFollowsTemporaryRedirectWithItsBody(t *testing.T) {
	var base string
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Location", "/other/fhir/$import-pnp")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Location", base+"/$job?id=1")
		writeFHIR(w, http.StatusAccepted, acceptedOutcome)
	})
	base = srv.URL + "/fhir"
	if _, err := newClient(t, base).KickOff(context.Background(), ImportRequest{ExportURL: "https://s/fhir"}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || reqs[1].requestURI != "/other/fhir/$import-pnp" || string(reqs[1].body) != string(reqs[0].body) ||
		len(reqs[0].body) == 0 || reqs[1].header.Get("Content-Type") != fhirJSON {
		t.Fatalf("requests = %+v", reqs)
	}
}

// A body of exactly the limit is read; one byte more is refused.
func TestBodyLimitIsExact(t *testing.T) {
	for _, tc := range []struct {
		size int
		kind Kind
	}{{maxBodyBytes, KindUnavailable}, {maxBodyBytes + 1, KindProtocol}} {
		srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, strings.Repeat(" ", tc.size))
		})
		err := newClient(t, srv.URL+"/fhir").Delete(context.Background(), srv.URL+"/fhir/$job?id=1")
		var e *Error
		if !errors.As(err, &e) || e.Kind != tc.kind || e.HTTPStatus != http.StatusServiceUnavailable {
			t.Errorf("%d bytes: %v, want kind %s", tc.size, err, tc.kind)
		}
	}
}

// parseHTTPDate reads the same instants http.ParseTime does, and fails where it fails.
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Thu, 03 Dec 2026 18:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994", "Mon, 30 Feb 2026 10:00:00 GMT", "Mon, 31 Apr 2026 10:00:00 GMT",
		"Mon, 29 Feb 2024 10:00:00 GMT", "Mon, 29 Feb 2023 10:00:00 GMT", "Mon, 00 Jan 2026 10:00:00 GMT",
		"Mon, 01 Jan 2026 24:00:00 GMT", "Mon, 01 Jan 2026 23:60:00 GMT", "Mon, 01 Jan 2026 23:59:60 GMT",
		"mon, 01 jan 2026 10:00:00 GMT", "Xyz, 01 Jan 2026 10:00:00 GMT", "Mon, 01 Jan 0000 00:00:00 GMT",
		"Mon, 01 Jan 2026 10:00:00 UTC", "Mon, 0x Jan 2026 10:00:00 GMT", "Mon, 01 Jan 2026 10:00:00 GMT ",
		"Mon, +1 Jan 2026 10:00:00 GMT", "", "yesterday",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := parseHTTPDate(s)
		want, err := http.ParseTime(s)
		if err != nil {
			want = time.Time{}
		}
		if !got.Equal(want) || got.IsZero() != want.IsZero() {
			t.Fatalf("parseHTTPDate(%q) = %v, http.ParseTime = %v (%v)", s, got, want, err)
		}
	})
}

// Bodies are read into pooled buffers: what a call returns must be its own
// response's, whatever other calls read meanwhile (run with -race).
func TestConcurrentCallsKeepTheirOwnBodies(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		id := r.URL.Query().Get("id")
		if strings.HasPrefix(id, "f") {
			writeFHIR(w, http.StatusBadRequest, errorOutcome("invalid", "failed "+id+strings.Repeat(".", len(id)*300)))
			return
		}
		writeFHIR(w, http.StatusOK, `{"resourceType":"Parameters","parameter":[{"name":"request","valueString":"`+id+
			strings.Repeat("x", len(id)*500)+`"}]}`)
	})
	c := newClient(t, srv.URL+"/fhir")
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 40 {
				id := strings.Repeat("j", 1+(g+i)%7) + string(rune('a'+g)) + time.Duration(i).String()
				if g%2 == 1 {
					id = "f" + id
				}
				st, err := c.Status(context.Background(), srv.URL+"/fhir/$job?id="+id)
				switch {
				case err != nil:
				case g%2 == 0 && (st.Result == nil || st.Result.Request != id+strings.Repeat("x", len(id)*500)):
					err = errors.New("result of another call: " + id)
				case g%2 == 1 && (st.Failure == nil || !strings.HasPrefix(st.Failure.Message, "failed "+id+".")):
					err = errors.New("failure of another call: " + id)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
