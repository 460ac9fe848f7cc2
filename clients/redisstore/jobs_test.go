package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// The earliest kick-off recorded for a status URL wins, whoever records it
// and in whatever order; milliseconds are kept.
func TestRecordJobEarliestWins(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	s, rdb := newStore(t, redisstore.WithClock(clock.Func(testenv.NewClock(t0).Now)))
	ctx := context.Background()
	url := "http://pathling/fhir/$job?id=1"

	got, err := s.RecordJob(ctx, "t1", url, t0)
	if err != nil || !got.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("first record: %v %v", got, err)
	}
	// A later kick-off that got the same job back learns the earlier time.
	if got, err := s.RecordJob(ctx, "t1", url, t0.Add(time.Hour)); err != nil || !got.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("later record: %v %v", got, err)
	}
	// An earlier one (another replica's clock) moves it back.
	if got, err := s.RecordJob(ctx, "t1", url, t0.Add(-time.Minute)); err != nil || !got.Equal(t0.Add(-time.Minute).Truncate(time.Millisecond)) {
		t.Fatalf("earlier record: %v %v", got, err)
	}
	// Per target, under its hash tag.
	if got, err := s.RecordJob(ctx, "t2", url, t0.Add(time.Hour)); err != nil || !got.Equal(t0.Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("other target: %v %v", got, err)
	}
	if n := rdb.ZCard(ctx, testPrefix+"{t1}:jobs").Val(); n != 1 {
		t.Fatalf("t1 holds %d jobs", n)
	}
	if _, err := s.RecordJob(ctx, "t1", "", t0); !errors.Is(err, redisstore.ErrInvalidArgument) {
		t.Fatalf("empty URL: %v", err)
	}
}

// The registry is bounded: jobs older than the retention and beyond the
// newest thousand are dropped.
func TestRecordJobBounded(t *testing.T) {
	clk := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s, rdb := newStore(t, redisstore.WithClock(clock.Func(clk.Now)), redisstore.WithRetention(48*time.Hour))
	ctx := context.Background()
	old := clk.Now().Add(-72 * time.Hour)
	if _, err := s.RecordJob(ctx, "t1", "http://p/old", old); err != nil {
		t.Fatal(err)
	}
	for i := range 1001 {
		if _, err := s.RecordJob(ctx, "t1", fmt.Sprintf("http://p/%04d", i), clk.Now().Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	key := testPrefix + "{t1}:jobs"
	if n := rdb.ZCard(ctx, key).Val(); n != 1000 {
		t.Fatalf("%d jobs kept, want 1000", n)
	}
	for _, gone := range []string{"http://p/old", "http://p/0000"} {
		if err := rdb.ZScore(ctx, key, gone).Err(); err == nil {
			t.Fatalf("%s kept", gone)
		}
	}
}

// Undeleted jobs come back oldest mark first until forgotten.
func TestUndeletedJobs(t *testing.T) {
	clk := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s, rdb := newStore(t, redisstore.WithClock(clock.Func(clk.Now)))
	ctx := context.Background()
	for _, u := range []string{"http://p/a", "http://p/b", "http://p/c"} {
		if _, err := s.RecordJob(ctx, "t1", u, clk.Now()); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkUndeleted(ctx, "t1", u); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	// Marking again keeps the first mark's place.
	if err := s.MarkUndeleted(ctx, "t1", "http://p/a"); err != nil {
		t.Fatal(err)
	}
	got, err := s.UndeletedJobs(ctx, "t1", 2)
	if err != nil || !slices.Equal(got, []string{"http://p/a", "http://p/b"}) {
		t.Fatalf("undeleted: %v %v", got, err)
	}
	if err := s.ForgetJob(ctx, "t1", "http://p/a"); err != nil {
		t.Fatal(err)
	}
	got, err = s.UndeletedJobs(ctx, "t1", 10)
	if err != nil || !slices.Equal(got, []string{"http://p/b", "http://p/c"}) {
		t.Fatalf("after forget: %v %v", got, err)
	}
	if err := rdb.ZScore(ctx, testPrefix+"{t1}:jobs", "http://p/a").Err(); err == nil {
		t.Fatal("a forgotten job is still recorded")
	}
	if got, err := s.UndeletedJobs(ctx, "t2", 10); err != nil || len(got) != 0 {
		t.Fatalf("other target: %v %v", got, err)
	}
}

// A job recorded again once its entry is past the retention is answered with
// its recorded time (as before) and its entry goes, as the sweep of every
// call dropped it: the next record starts afresh. The sweep itself runs only
// when the registry gains a job.
func TestRecordJobAgainPastTheRetention(t *testing.T) {
	clk := testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s, rdb := newStore(t, redisstore.WithClock(clock.Func(clk.Now)), redisstore.WithRetention(48*time.Hour))
	ctx := context.Background()
	key := testPrefix + "{t1}:jobs"
	t0 := clk.Now()
	for _, u := range []string{"http://p/a", "http://p/b"} {
		if _, err := s.RecordJob(ctx, "t1", u, t0); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(72 * time.Hour)
	if got, err := s.RecordJob(ctx, "t1", "http://p/a", clk.Now()); err != nil || !got.Equal(t0) {
		t.Fatalf("stale job recorded again: %v %v, want %v", got, err, t0)
	}
	if ids := rdb.ZRange(ctx, key, 0, -1).Val(); !slices.Equal(ids, []string{"http://p/b"}) {
		t.Fatalf("registry %v, want [http://p/b]: the stale entry read goes, no sweep otherwise", ids)
	}
	if got, err := s.RecordJob(ctx, "t1", "http://p/a", clk.Now()); err != nil || !got.Equal(clk.Now()) {
		t.Fatalf("after the stale entry went: %v %v, want %v", got, err, clk.Now())
	}
	if ids := rdb.ZRange(ctx, key, 0, -1).Val(); !slices.Equal(ids, []string{"http://p/a"}) {
		t.Fatalf("registry %v, want [http://p/a]: a new entry sweeps the stale ones", ids)
	}
}
