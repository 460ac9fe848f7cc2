package redisstore_test

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// fastSync runs the store calls of one sync whose job is done at the first
// poll, as handlers makes them (sync.go, driver.go): Begin with the new
// record, the kick-off's job and polling record, the terminal record with the
// watermark and a duration sample, the release forgetting the deleted job.
func fastSync(tb testing.TB, s *redisstore.Store, request string) {
	tb.Helper()
	fastSyncOf(tb, s, request, nil)
}

// fastSyncOf is fastSync with a queue ticket (nil: concurrency forbid).
func fastSyncOf(tb testing.TB, s *redisstore.Store, request string, queue *handlers.QueueTicket) {
	tb.Helper()
	if err := fastSyncOn(s, "tgt", request, queue); err != nil {
		tb.Fatal(err)
	}
}

// fastSyncOn is fastSyncOf on target, returning the first error (for
// goroutines other than the test's).
func fastSyncOn(s *redisstore.Store, target, request string, queue *handlers.QueueTicket) error {
	ctx := context.Background()
	now := time.Now().UTC()
	key := "wm-key"
	r := &handlers.Run{
		RunID: "run-" + request, RequestID: request, Target: target, Driver: "host-1234",
		Request:      messages.SyncRequested{ExportURL: "https://source.example/fhir", SaveMode: "merge", Types: []string{"Patient", "Observation"}},
		Params:       handlers.ImportParams{ExportURL: "https://source.example/fhir", SaveMode: "merge", Types: []string{"Patient", "Observation"}},
		WatermarkKey: key, State: handlers.RunKicking, Attempts: 1,
		StartedAt: now, FirstKickOff: now, UpdatedAt: now, Deadline: now.Add(2 * time.Hour),
	}
	b, err := s.Begin(ctx, handlers.BeginRequest{
		AcquireRequest: handlers.AcquireRequest{Target: target, RequestID: request, TTL: time.Minute, Queue: queue},
		WatermarkKey:   key, UndeletedJobs: 10, NewRun: r,
	})
	if err != nil {
		return err
	}
	r.State, r.StatusURL = handlers.RunPolling, "https://pathling.example/fhir/$job?id="+request
	if _, err := s.RecordKickOff(ctx, b.Lease, r); err != nil {
		return err
	}
	end := time.Now().UTC()
	body, _ := json.Marshal(map[string]any{"requestId": request, "runId": r.RunID, "target": target, "watermark": end.Format(time.RFC3339Nano)})
	r.State, r.Polls, r.FinishedAt, r.UpdatedAt = handlers.RunCompleted, 1, end, end
	r.Outcome = &handlers.Event{Subject: "pathling.sync.completed." + target, Body: body,
		Envelope: messages.Envelope{ID: "evt-" + request, Source: "pathling-sync/host-1234", Type: "pathling.sync.completed", Subject: target, Time: end,
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	f := &handlers.Finish{Run: r, Duration: &handlers.DurationSample{Shape: "merge/2", D: time.Second},
		Watermark: &handlers.WatermarkUpdate{Key: key, Stored: b.Watermark, HasStored: b.HasWatermark, Commit: now}}
	if err := s.Finish(ctx, b.Lease, f); err != nil {
		return err
	}
	return s.Finish(ctx, b.Lease, &handlers.Finish{Release: true, ForgetJob: r.StatusURL})
}

// commandStats are Redis' per-command call counters (INFO commandstats),
// without INFO's own.
func commandStats(tb testing.TB, c *redis.Client) map[string]int64 {
	tb.Helper()
	calls, _ := commandStatsUsec(tb, c)
	return calls
}

// scriptUsec is the time Redis spent running scripts (EVAL and EVALSHA,
// with the commands they ran), in microseconds, from INFO commandstats.
func scriptUsec(tb testing.TB, c *redis.Client) int64 {
	tb.Helper()
	_, usec := commandStatsUsec(tb, c)
	return usec["eval"] + usec["evalsha"]
}

// commandStatsUsec are INFO commandstats' calls and usec per command,
// without INFO's own.
func commandStatsUsec(tb testing.TB, c *redis.Client) (map[string]int64, map[string]int64) {
	tb.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	calls, usec := map[string]int64{}, map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || name == "cmdstat_info" {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		n, rest, _ := strings.Cut(rest, ",usec=")
		u, _, _ := strings.Cut(rest, ",")
		var err error
		if calls[name], err = strconv.ParseInt(n, 10, 64); err == nil {
			usec[name], err = strconv.ParseInt(u, 10, 64)
		}
		if err != nil {
			tb.Fatalf("commandstats line %q: %v", line, err)
		}
	}
	return calls, usec
}

// commandsSince are the commands Redis ran since before, in total and per
// command ("hset 2 zadd 3 ...").
func commandsSince(tb testing.TB, c *redis.Client, before map[string]int64) (int64, string) {
	tb.Helper()
	var total int64
	var names []string
	delta := map[string]int64{}
	for name, n := range commandStats(tb, c) {
		if d := n - before[name]; d > 0 {
			total += d
			delta[name] = d
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, name := range names {
		sb.WriteString(name + " " + strconv.FormatInt(delta[name], 10) + " ")
	}
	return total, strings.TrimSpace(sb.String())
}

// The commands Redis runs for one fast sync's store calls: a ceiling, so
// that a script does not grow back its housekeeping unnoticed.
func TestFastSyncRedisCommands(t *testing.T) {
	s, c := newStore(t)
	fastSync(t, s, "warm-up") // loads the scripts (EVALSHA misses, then EVAL)
	fastSync(t, s, "second")  // a target with records and jobs already
	before := commandStats(t, c)
	fastSync(t, s, "measured")
	n, per := commandsSince(t, c, before)
	t.Logf("%d Redis commands for one fast sync: %s", n, per)
	const ceiling = 39 // 50 before the scripts spared their redundant commands
	if n > ceiling {
		t.Errorf("%d Redis commands for one fast sync, want at most %d", n, ceiling)
	}

	// With a queue ticket (concurrency queue), granted at once.
	before = commandStats(t, c)
	fastSyncOf(t, s, "queued", &handlers.QueueTicket{Seq: 7, Deadline: time.Now().Add(time.Hour)})
	n, per = commandsSince(t, c, before)
	t.Logf("%d Redis commands for one queued fast sync: %s", n, per)
	const queuedCeiling = 43 // 54 before
	if n > queuedCeiling {
		t.Errorf("%d Redis commands for one queued fast sync, want at most %d", n, queuedCeiling)
	}
}

// BenchmarkFastSyncStore is one fast sync's store calls; redis-cmds/op are
// the commands Redis ran (scripts' inner commands included), redis-script-us/op
// the time Redis spent in the scripts.
func BenchmarkFastSyncStore(b *testing.B) {
	s, c := newStore(b)
	fastSync(b, s, "warm-up")
	before, usecBefore := commandStats(b, c), scriptUsec(b, c)
	n := 0
	for b.Loop() {
		n++
		fastSync(b, s, "req-"+strconv.Itoa(n))
	}
	b.StopTimer()
	usec := scriptUsec(b, c) - usecBefore
	cmds, _ := commandsSince(b, c, before)
	b.ReportMetric(float64(cmds)/float64(n), "redis-cmds/op")
	b.ReportMetric(float64(usec)/float64(n), "redis-script-us/op")
}

// The runs index is swept of entries whose records expired when it gains an
// entry, not on a run's later writes: those update the run's own entry.
func TestRunsIndexSweptWhenItGains(t *testing.T) {
	clk := testenv.NewClock(time.Now())
	s, c := newStore(t, redisstore.WithClock(clock.Func(clk.Now)), redisstore.WithRetention(time.Hour))
	ctx := context.Background()
	index := testPrefix + "{tgt}:runs"
	l1 := acquire(t, s, "tgt", "r1", time.Minute)
	if err := s.SaveRun(ctx, l1, newRun(l1, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, l1); err != nil {
		t.Fatal(err)
	}
	l2 := acquire(t, s, "tgt", "r2", time.Minute)
	r2 := newRun(l2, handlers.RunPolling)
	if err := s.SaveRun(ctx, l2, r2); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour) // r1's entry is past its expiry
	if err := s.SaveRun(ctx, l2, r2); err != nil {
		t.Fatal(err)
	}
	if n := c.ZCard(ctx, index).Val(); n != 2 {
		t.Errorf("%d index entries after an update, want 2 (no sweep)", n)
	}
	if got, want := c.ZScore(ctx, index, "r2").Val(), float64(clk.Now().Add(time.Hour).UnixMilli()); got != want {
		t.Errorf("r2's index score %v, want its new expiry %v", got, want)
	}
	if err := s.Release(ctx, l2); err != nil {
		t.Fatal(err)
	}
	l3 := acquire(t, s, "tgt", "r3", time.Minute)
	if err := s.SaveRun(ctx, l3, newRun(l3, handlers.RunPolling)); err != nil {
		t.Fatal(err)
	}
	if ids := c.ZRange(ctx, index, 0, -1).Val(); len(ids) != 2 || ids[0] != "r2" || ids[1] != "r3" {
		t.Errorf("index %v, want [r2 r3]: a new entry sweeps r1's", ids)
	}
}

// A queue ticket's deadline goes with the ticket, whichever way the ticket
// goes: the lock granted to it, or its release while it waits.
func TestQueueDeadlinesGoWithTickets(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	deadlines := testPrefix + "{tgt}:queue:deadline"
	ticket := func(id string, seq uint64) handlers.AcquireRequest {
		return handlers.AcquireRequest{Target: "tgt", RequestID: id, TTL: time.Minute,
			Queue: &handlers.QueueTicket{Seq: seq, Deadline: time.Now().Add(time.Hour)}}
	}
	l1, err := s.Acquire(ctx, ticket("q1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, ticket("q2", 2)); err == nil {
		t.Fatal("q2 granted while q1 holds the lock")
	}
	if got := c.HKeys(ctx, deadlines).Val(); len(got) != 1 || got[0] != "q2" {
		t.Fatalf("deadlines %v, want [q2]", got)
	}
	if err := s.Release(ctx, handlers.Lease{Target: "tgt", RequestID: "q2", Token: 1}); err != nil {
		t.Fatal(err)
	}
	if n := c.HLen(ctx, deadlines).Val(); n != 0 {
		t.Errorf("%d deadlines left after the waiting ticket's release", n)
	}
	if _, err := s.Acquire(ctx, ticket("q3", 3)); err == nil {
		t.Fatal("q3 granted while q1 holds the lock")
	}
	if err := s.Release(ctx, l1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, ticket("q3", 3)); err != nil {
		t.Fatal(err)
	}
	if n := c.HLen(ctx, deadlines).Val(); n != 0 || c.ZCard(ctx, testPrefix+"{tgt}:queue").Val() != 0 {
		t.Errorf("%d deadlines left after the ticket's grant", n)
	}
}

// A Redis that lost its script cache (a restart, SCRIPT FLUSH) is sent the
// scripts' source: the steps go on.
func TestFastSyncAfterScriptFlush(t *testing.T) {
	s, c := newStore(t)
	fastSync(t, s, "before")
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	before := commandStats(t, c)
	fastSync(t, s, "after")
	if _, per := commandsSince(t, c, before); !strings.Contains(per, "eval 4 ") {
		t.Errorf("commands after the flush: %s, want 4 EVALs", per)
	}
	if r, err := s.LoadRun(context.Background(), "tgt", "after"); err != nil || r.State != handlers.RunCompleted {
		t.Fatalf("record after the flush: %+v, %v", r, err)
	}
}
