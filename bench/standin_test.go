package bench

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/pathling"
)

// The stand-in speaks Pathling's wire format as the service's own client
// reads it: a kick-off answered 202 with an absolute Content-Location, 202
// polls (with X-Progress in the last phase), a 200 Parameters result, a 202
// DELETE, and 404 for a job it does not know.
func TestStandInWireFormat(t *testing.T) {
	s, err := NewStandIn(Fixed(300*time.Millisecond), WithProgress(0.5))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := pathling.New(s.BaseURL("t1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	a, err := c.Start(ctx, pathling.ImportRequest{ExportURL: s.SourceURL(), SaveMode: pathling.SaveModeMerge, Types: []string{"Patient"}})
	if err != nil {
		t.Fatalf("kick-off: %v", err)
	}
	if !strings.HasPrefix(a.StatusURL, s.BaseURL("t1")+"/$job?id=") {
		t.Errorf("status URL %q", a.StatusURL)
	}
	if a.ServerDate.IsZero() {
		t.Error("kick-off without a Date header")
	}
	st, err := c.Status(ctx, a.StatusURL)
	if err != nil || st.State != pathling.StateRunning || st.Progress != "" {
		t.Fatalf("first poll: %+v, %v; want running without X-Progress", st, err)
	}
	var sawProgress bool
	err = waitFor(ctx, 5*time.Second, "the job to finish", func() bool {
		st, err = c.Status(ctx, a.StatusURL)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		sawProgress = sawProgress || (st.State == pathling.StateRunning && strings.HasSuffix(st.Progress, "%"))
		return st.State == pathling.StateDone
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawProgress {
		t.Error("no X-Progress in the job's last phase")
	}
	if st.Result == nil || st.Result.TransactionTime.IsZero() || len(st.Result.Outputs) != 1 || !strings.Contains(st.Result.Request, "/t/t1/fhir/$import-pnp") {
		t.Errorf("result: %+v", st.Result)
	}
	if err := c.Delete(ctx, a.StatusURL); err != nil {
		t.Fatalf("delete: %v", err)
	}
	st, err = c.Status(ctx, a.StatusURL)
	if err != nil || st.State != pathling.StateLost {
		t.Errorf("poll after DELETE: %+v, %v; want lost (404)", st, err)
	}
	// A job of another target is not this target's.
	b, err := c.Start(ctx, pathling.ImportRequest{ExportURL: s.SourceURL()})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pathling.New(s.BaseURL("t2"))
	if st, err := other.Status(ctx, strings.Replace(b.StatusURL, "/t/t1/", "/t/t2/", 1)); err != nil || st.State != pathling.StateLost {
		t.Errorf("another target's job: %+v, %v; want lost", st, err)
	}
	want := StandInCounters{KickOffs: 2, Deletes: 1}
	if got := s.Counters(); got.KickOffs != want.KickOffs || got.Deletes != want.Deletes || got.Rejected != 0 || got.Polls < 3 {
		t.Errorf("counters %+v", got)
	}
}

// A kick-off without Prefer: respond-async is refused as Pathling does (400).
func TestStandInRejectsSyncKickOff(t *testing.T) {
	s, err := NewStandIn(Fixed(0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := httpPost(s.BaseURL("t1")+"/$import-pnp", `{"resourceType":"Parameters","parameter":[{"name":"exportUrl","valueUrl":"http://x/fhir"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp != 400 {
		t.Errorf("status %d, want 400", resp)
	}
}

func TestLogNormalMedian(t *testing.T) {
	l := LogNormal{Median: time.Second, Sigma: 0.5}
	below := 0
	const n = 4000
	for range n {
		if l.Next("x") < time.Second {
			below++
		}
	}
	if below < n*45/100 || below > n*55/100 {
		t.Errorf("%d of %d below the median", below, n)
	}
	o := LogNormal{Median: time.Second, OutlierFrac: 1, OutlierFactor: 10}
	if d := o.Next("x"); d != 10*time.Second {
		t.Errorf("outlier %s, want 10s", d)
	}
}

func httpPost(url, body string) (int, error) {
	resp, err := http.Post(url, "application/fhir+json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Per-shape durations: a kick-off with _since draws the target's incremental
// distribution; the kick-off event tells when the job will be done.
func TestStandInDurationsPerShape(t *testing.T) {
	var mu sync.Mutex
	var due []time.Duration
	d := PerShape{"t1": {"full": Fixed(time.Hour), "incr": Fixed(time.Minute)}}
	s, err := NewStandIn(d, WithObserver(func(ev StandInEvent) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Kind == "kickoff" {
			due = append(due, ev.Due.Sub(ev.At))
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := pathling.New(s.BaseURL("t1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, req := range []pathling.ImportRequest{
		{ExportURL: s.SourceURL(), SaveMode: pathling.SaveModeMerge},
		{ExportURL: s.SourceURL(), SaveMode: pathling.SaveModeMerge, Since: &since},
	} {
		if _, err := c.Start(ctx, req); err != nil {
			t.Fatalf("kick-off: %v", err)
		}
		// The stand-in tells its observer after it answered.
		n := i + 1
		if err := waitFor(ctx, 5*time.Second, "the kick-off event", func() bool { mu.Lock(); defer mu.Unlock(); return len(due) >= n }); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(due) != 2 || due[0] != time.Hour || due[1] != time.Minute {
		t.Errorf("job durations %v, want [1h 1m] (full, incremental)", due)
	}
}
