package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/handlers"
)

func begin(t *testing.T, s interface {
	Begin(context.Context, handlers.BeginRequest) (handlers.Begun, error)
}, target, request, key string, undeleted int) (handlers.Begun, error) {
	t.Helper()
	return s.Begin(context.Background(), handlers.BeginRequest{
		AcquireRequest: handlers.AcquireRequest{Target: target, RequestID: request, TTL: time.Minute},
		WatermarkKey:   key, UndeletedJobs: undeleted,
	})
}

// Begin takes the lock and reads, with it, the request's record, the
// watermark and the undeleted jobs.
func TestBeginReadsWhatTheRunStartsFrom(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	b, err := begin(t, s, "tgt", "req-1", "wm", 10)
	if err != nil {
		t.Fatal(err)
	}
	if b.Lease.Token == 0 || b.Run != nil || b.HasWatermark || len(b.Undeleted) != 0 {
		t.Fatalf("fresh begin: %+v", b)
	}
	wm := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	if err := s.CommitWatermark(ctx, b.Lease, "wm", wm); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRun(ctx, b.Lease, newRun(b.Lease, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://p/job/1", "http://p/job/2"} {
		if err := s.MarkUndeleted(ctx, "tgt", u); err != nil {
			t.Fatal(err)
		}
	}
	// A redelivery takes over, with everything read.
	b2, err := begin(t, s, "tgt", "req-1", "wm", 1)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Lease.Token <= b.Lease.Token {
		t.Errorf("token %d not after %d", b2.Lease.Token, b.Lease.Token)
	}
	if b2.Run == nil || b2.Run.State != handlers.RunPolling || b2.Run.Token != b.Lease.Token {
		t.Errorf("run %+v", b2.Run)
	}
	if !b2.HasWatermark || !b2.Watermark.Equal(wm) {
		t.Errorf("watermark %v %v, want %v", b2.Watermark, b2.HasWatermark, wm)
	}
	if len(b2.Undeleted) != 1 || b2.Undeleted[0] != "http://p/job/1" {
		t.Errorf("undeleted %v", b2.Undeleted)
	}
	// Another request meets the holder and reads nothing.
	if _, err := begin(t, s, "tgt", "req-2", "wm", 10); err == nil {
		t.Fatal("second request granted")
	} else {
		wantHeldBy(t, err, "req-1")
	}
}

// A finished request's Begin takes nothing and hands back the record.
func TestBeginTellsFinishedRun(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	b, err := begin(t, s, "tgt", "done", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, b.Lease, &handlers.Finish{Run: newRun(b.Lease, handlers.RunCompleted)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, b.Lease, &handlers.Finish{Release: true}); err != nil {
		t.Fatal(err)
	}
	_, err = begin(t, s, "tgt", "done", "", 0)
	var fin *handlers.RunFinishedError
	if !errors.As(err, &fin) || fin.Run.State != handlers.RunCompleted || fin.Run.RequestID != "done" {
		t.Fatalf("err = %v, want *RunFinishedError with the record", err)
	}
	if n, _ := c.Exists(ctx, testPrefix+"{tgt}:lock").Result(); n != 0 {
		t.Error("a finished request took the lock")
	}
	// So does a refusal's record.
	rec := &handlers.Run{RequestID: "refused", Target: "tgt", State: handlers.RunFailed}
	if _, err := s.RecordOutcome(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := begin(t, s, "tgt", "refused", "", 0); !errors.As(err, &fin) {
		t.Fatalf("refused: err = %v, want *RunFinishedError", err)
	}
}

// Finish commits the watermark (never backwards), writes the terminal
// record, releases the lock with a notification, forgets the deleted job and
// adds the duration sample; it refuses when the stored watermark is not the
// one decided on, and when the lease is stale.
func TestFinish(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	sub := c.Subscribe(ctx, testPrefix+"released")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription is confirmed
		t.Fatal(err)
	}
	b, err := begin(t, s, "tgt", "r1", "wm", 0)
	if err != nil {
		t.Fatal(err)
	}
	stale := b.Lease
	stale.Token--
	wm := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := newRun(b.Lease, handlers.RunCompleted)
	if err := s.Finish(ctx, stale, &handlers.Finish{Run: r}); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("stale finish: %v", err)
	}
	// Decided on "none stored" while one is stored: refused, nothing written.
	if err := s.CommitWatermark(ctx, b.Lease, "wm", wm.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	err = s.Finish(ctx, b.Lease, &handlers.Finish{Run: r, Watermark: &handlers.WatermarkUpdate{Key: "wm", Commit: wm}})
	var moved *handlers.WatermarkMovedError
	if !errors.As(err, &moved) || !moved.HasStored || !moved.Stored.Equal(wm.Add(time.Hour)) {
		t.Fatalf("finish on a stale decision: %v", err)
	}
	if _, err := s.LoadRun(ctx, "tgt", "r1"); !errors.Is(err, handlers.ErrRunNotFound) {
		t.Fatalf("a refused finish wrote the record: %v", err)
	}
	if _, err := s.RecordJob(ctx, "tgt", "http://p/job/1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkUndeleted(ctx, "tgt", "http://p/job/1"); err != nil {
		t.Fatal(err)
	}
	// Decided on what is stored, committing an earlier value: kept.
	err = s.Finish(ctx, b.Lease, &handlers.Finish{Run: r,
		Watermark: &handlers.WatermarkUpdate{Key: "wm", Stored: wm.Add(time.Hour), HasStored: true, Commit: wm},
		Duration:  &handlers.DurationSample{Shape: "full", D: 1500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if _, held, _ := s.Lock(ctx, "tgt"); !held {
		t.Error("the terminal write released the lock before the job's DELETE")
	}
	if err := s.Finish(ctx, b.Lease, &handlers.Finish{Release: true, ForgetJob: "http://p/job/1"}); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Watermark(ctx, "tgt", "wm"); !ok || !got.Equal(wm.Add(time.Hour)) {
		t.Errorf("watermark moved backwards to %v", got)
	}
	if run, err := s.LoadRun(ctx, "tgt", "r1"); err != nil || run.State != handlers.RunCompleted || run.Token != b.Lease.Token {
		t.Errorf("record %+v, %v", run, err)
	}
	if _, held, _ := s.Lock(ctx, "tgt"); held {
		t.Error("lock still held")
	}
	if left, _ := s.UndeletedJobs(ctx, "tgt", 10); len(left) != 0 {
		t.Errorf("undeleted jobs %v", left)
	}
	if n, _ := c.ZCard(ctx, testPrefix+"{tgt}:jobs").Result(); n != 0 {
		t.Errorf("%d jobs left in the registry", n)
	}
	if d, err := s.Durations(ctx, "tgt", "full"); err != nil || len(d) != 1 || d[0] != 1500*time.Millisecond {
		t.Errorf("durations %v, %v", d, err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "tgt" {
		t.Fatalf("release notification %v, %v", msg, err)
	}
	// A later watermark moves it forward; the lock is gone: vanished.
	b2, err := begin(t, s, "tgt", "r2", "wm", 0)
	if err != nil {
		t.Fatal(err)
	}
	later := wm.Add(2 * time.Hour)
	r2 := newRun(b2.Lease, handlers.RunCompleted)
	if err := s.Finish(ctx, b2.Lease, &handlers.Finish{Run: r2, Watermark: &handlers.WatermarkUpdate{
		Key: "wm", Stored: b2.Watermark, HasStored: b2.HasWatermark, Commit: later}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, b2.Lease, &handlers.Finish{Release: true}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Watermark(ctx, "tgt", "wm"); !got.Equal(later) {
		t.Errorf("watermark %v, want %v", got, later)
	}
	if err := s.Finish(ctx, b2.Lease, &handlers.Finish{Run: r2}); !errors.Is(err, handlers.ErrLockVanished) {
		t.Errorf("finish after release: %v, want ErrLockVanished", err)
	}
	if err := s.Finish(ctx, b2.Lease, &handlers.Finish{Run: newRun(b2.Lease, handlers.RunPolling)}); err == nil {
		t.Error("finish took a record that is not terminal")
	}
}

// RecordKickOff records the job and saves the polling record, unless the job
// is older than the run's kick-off: then only the job is recorded.
func TestRecordKickOff(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	b, err := begin(t, s, "tgt", "r1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	kicked := time.Now().UTC().Truncate(time.Second) // within the registry's retention
	r := newRun(b.Lease, handlers.RunPolling)
	r.StatusURL, r.FirstKickOff = "http://p/job/new", kicked
	got, err := s.RecordKickOff(ctx, b.Lease, r)
	if err != nil || !got.Equal(kicked) {
		t.Fatalf("new job: %v, %v", got, err)
	}
	if run, err := s.LoadRun(ctx, "tgt", "r1"); err != nil || run.StatusURL != "http://p/job/new" {
		t.Fatalf("record %+v, %v", run, err)
	}
	// Pathling hands back a job kicked off earlier: not saved.
	if _, err := s.RecordJob(ctx, "tgt", "http://p/job/old", kicked.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	r.StatusURL = "http://p/job/old"
	got, err = s.RecordKickOff(ctx, b.Lease, r)
	if err != nil || !got.Equal(kicked.Add(-time.Hour)) {
		t.Fatalf("old job: %v, %v", got, err)
	}
	if run, _ := s.LoadRun(ctx, "tgt", "r1"); run.StatusURL != "http://p/job/new" {
		t.Errorf("saved a record whose watermark base is too late: %+v", run)
	}
	// Stale lease: the job is recorded, the record refused.
	stale := b.Lease
	stale.Token--
	r.StatusURL = "http://p/job/third"
	if _, err := s.RecordKickOff(ctx, stale, r); !errors.Is(err, handlers.ErrLockLost) {
		t.Fatalf("stale: %v", err)
	}
	if got, _ := s.RecordJob(ctx, "tgt", "http://p/job/third", kicked.Add(time.Hour)); !got.Equal(kicked) {
		t.Errorf("stale lease's job not recorded (earliest %v)", got)
	}
}

// Begin writes a new run's record under the granted token (a fence seeded
// from Redis' clock: a 16-digit token), unless the request has one.
func TestBeginWritesNewRun(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	req := handlers.BeginRequest{AcquireRequest: handlers.AcquireRequest{Target: "tgt", RequestID: "r1", TTL: time.Minute}}
	r := newRun(handlers.Lease{Target: "tgt", RequestID: "r1"}, handlers.RunKicking)
	req.NewRun = r
	b, err := s.Begin(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Created || b.Run != nil || r.Token != b.Lease.Token || b.Lease.Token < 1e15 {
		t.Fatalf("begun %+v, record token %d", b, r.Token)
	}
	got, err := s.LoadRun(ctx, "tgt", "r1")
	if err != nil || got.Token != b.Lease.Token || got.State != handlers.RunKicking || got.RunID != r.RunID {
		t.Fatalf("stored %+v, %v", got, err)
	}
	// The lease's fenced writes go on from it.
	got.State = handlers.RunPolling
	if err := s.SaveRun(ctx, b.Lease, got); err != nil {
		t.Fatal(err)
	}
	// A redelivery adopts it: the new record is not written.
	other := newRun(handlers.Lease{Target: "tgt", RequestID: "r1"}, handlers.RunKicking)
	other.RunID = "another"
	req.NewRun = other
	b2, err := s.Begin(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Created || b2.Run == nil || b2.Run.RunID != r.RunID || b2.Run.State != handlers.RunPolling {
		t.Fatalf("redelivery: %+v", b2)
	}
}

// The terminal write records a job not yet recorded, and refuses, writing
// only that, when the job was kicked off before the run.
func TestFinishRecordsPendingJob(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	b, err := begin(t, s, "tgt", "r1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	kicked := time.Now().UTC().Truncate(time.Millisecond)
	r := newRun(b.Lease, handlers.RunCompleted)
	r.StatusURL, r.FirstKickOff = "http://p/job/old", kicked
	if _, err := s.RecordJob(ctx, "tgt", "http://p/job/old", kicked.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	err = s.Finish(ctx, b.Lease, &handlers.Finish{Run: r, RecordJob: true})
	var earlier *handlers.EarlierJobError
	if !errors.As(err, &earlier) || !earlier.KickedOffAt.Equal(kicked.Add(-time.Minute)) {
		t.Fatalf("err = %v, want *EarlierJobError at %v", err, kicked.Add(-time.Minute))
	}
	if _, err := s.LoadRun(ctx, "tgt", "r1"); !errors.Is(err, handlers.ErrRunNotFound) {
		t.Fatalf("record written: %v", err)
	}
	r.StatusURL = "http://p/job/new"
	if err := s.Finish(ctx, b.Lease, &handlers.Finish{Run: r, RecordJob: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.RecordJob(ctx, "tgt", "http://p/job/new", kicked.Add(time.Hour)); !got.Equal(kicked) {
		t.Errorf("job recorded at %v, want %v", got, kicked)
	}
}

// A new since "auto" run's record takes the watermark Begin reads as its
// since, for every reader, until a full write carries it.
func TestBeginResolvesAutoSince(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	l := acquire(t, s, "tgt", "earlier", time.Minute)
	wm := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.CommitWatermark(ctx, l, "wm", wm); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	r := newRun(handlers.Lease{Target: "tgt", RequestID: "auto"}, handlers.RunKicking)
	r.Request.Since = "auto"
	b, err := s.Begin(ctx, handlers.BeginRequest{
		AcquireRequest: handlers.AcquireRequest{Target: "tgt", RequestID: "auto", TTL: time.Minute},
		WatermarkKey:   "wm", NewRun: r})
	if err != nil || !b.Created {
		t.Fatalf("begin: %+v, %v", b, err)
	}
	if r.Params.Since == nil || !r.Params.Since.Equal(wm) {
		t.Fatalf("new run's since %v, want %v", r.Params.Since, wm)
	}
	got, err := s.LoadRun(ctx, "tgt", "auto")
	if err != nil || got.Params.Since == nil || !got.Params.Since.Equal(wm) {
		t.Fatalf("loaded since %v (%v), want %v", got.Params.Since, err, wm)
	}
	runs, err := s.ListRuns(ctx, "tgt")
	if err != nil || len(runs) != 1 || runs[0].Params.Since == nil || !runs[0].Params.Since.Equal(wm) {
		t.Fatalf("listed %v, %v", runs, err)
	}
	b2, err := s.Begin(ctx, handlers.BeginRequest{
		AcquireRequest: handlers.AcquireRequest{Target: "tgt", RequestID: "auto", TTL: time.Minute}, WatermarkKey: "wm"})
	if err != nil || b2.Run == nil || b2.Run.Params.Since == nil || !b2.Run.Params.Since.Equal(wm) {
		t.Fatalf("adopted: %+v, %v", b2.Run, err)
	}
}
