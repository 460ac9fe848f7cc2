package pathling

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// The server's Date header comes back with a kick-off and every poll (zero
// when absent or unparsable): callers measure clock skew with it.
func TestServerDate(t *testing.T) {
	date := time.Date(2026, 3, 1, 11, 50, 0, 0, time.UTC)
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 1:
			w.Header().Set("Date", date.Format(http.TimeFormat))
			w.Header().Set("Content-Location", "/fhir/$job?id=1")
			w.WriteHeader(http.StatusAccepted)
		case 2:
			w.Header().Set("Date", date.Add(time.Minute).Format(http.TimeFormat))
			w.WriteHeader(http.StatusAccepted)
		default:
			w.Header()["Date"] = []string{"yesterday"}
			w.WriteHeader(http.StatusAccepted)
		}
	})
	c := newClient(t, srv.URL+"/fhir")
	ctx := context.Background()
	a, err := c.Start(ctx, ImportRequest{ExportURL: "https://s/fhir"})
	if err != nil || !a.ServerDate.Equal(date) || a.StatusURL != srv.URL+"/fhir/$job?id=1" {
		t.Fatalf("kick-off: %+v %v", a, err)
	}
	st, err := c.Status(ctx, a.StatusURL)
	if err != nil || !st.ServerDate.Equal(date.Add(time.Minute)) {
		t.Fatalf("poll: %+v %v", st, err)
	}
	st, err = c.Status(ctx, a.StatusURL)
	if err != nil || !st.ServerDate.IsZero() {
		t.Fatalf("unparsable Date: %+v %v", st, err)
	}
}
