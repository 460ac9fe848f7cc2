package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// announcements subscribes to the store's release channel and returns the
// targets announced, in order.
func announcements(t *testing.T, c *redis.Client) <-chan string {
	t.Helper()
	ps := c.Subscribe(context.Background(), redisstore.ReleaseChannel(testPrefix))
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	out := make(chan string, 16)
	go func() {
		for m := range ps.Channel() {
			out <- m.Payload
		}
	}()
	return out
}

func wantAnnounced(t *testing.T, got <-chan string, target string) {
	t.Helper()
	select {
	case g := <-got:
		if g != target {
			t.Fatalf("announced %q, want %q", g, target)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("release of %q not announced", target)
	}
}

// Release and ReleaseFinished announce a freed lock (or a dropped queue
// ticket) on <prefix>released with the target's name; nothing to release is
// not announced.
func TestReleaseIsAnnounced(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	got := announcements(t, c)

	l := acquire(t, s, "tgt-a", "r1", time.Minute)
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	wantAnnounced(t, got, "tgt-a")

	if err := s.Release(ctx, l); err != nil { // nothing left to release: no announcement
		t.Fatal(err)
	}
	acquire(t, s, "tgt-b", "r2", time.Minute)
	if err := s.ReleaseFinished(ctx, "tgt-b", "r2"); err != nil {
		t.Fatal(err)
	}
	wantAnnounced(t, got, "tgt-b") // not a second tgt-a

	// A queued request that gives its ticket up (Release of a lease it never
	// held) is announced: the next in the queue may go now.
	acquire(t, s, "tgt-c", "holder", time.Minute)
	_, err := s.Acquire(ctx, queued("tgt-c", "q1", 1, time.Now().Add(time.Hour)))
	wantHeldBy(t, err, "holder")
	if err := s.Release(ctx, handlers.Lease{Target: "tgt-c", RequestID: "q1", Token: 1}); err != nil {
		t.Fatal(err)
	}
	wantAnnounced(t, got, "tgt-c")
	select {
	case g := <-got:
		t.Fatalf("unexpected announcement %q", g)
	default:
	}
}

func runReleases(t *testing.T, r *redisstore.Releases) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitHeard waits until rel hears announcements: it subscribes in the
// background, and what is published before is not heard.
func waitHeard(t *testing.T, rel *redisstore.Releases, c *redis.Client) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		ch, stop := rel.WatchRelease("probe")
		defer stop()
		if err := c.Publish(context.Background(), redisstore.ReleaseChannel(testPrefix), "probe").Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}, "release announcements heard")
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A watch of a target is woken by a release of that target, not of another;
// a stopped watch is forgotten.
func TestReleasesWakeWatchersOfTheTarget(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	rel := redisstore.NewReleases(c, testPrefix, nil)
	runReleases(t, rel)
	waitHeard(t, rel, c)

	a1, stopA1 := rel.WatchRelease("tgt-a")
	defer stopA1()
	a2, stopA2 := rel.WatchRelease("tgt-a")
	defer stopA2()
	b, stopB := rel.WatchRelease("tgt-b")
	defer stopB()
	gone, stopGone := rel.WatchRelease("tgt-a")
	stopGone()
	if n := rel.Watching(); n != 3 {
		t.Fatalf("watching %d, want 3", n)
	}

	l := acquire(t, s, "tgt-a", "r1", time.Minute)
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan struct{}{a1, a2} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("watcher of tgt-a not woken by its release")
		}
	}
	if closed(b) || closed(gone) {
		t.Fatal("a watcher of another target, or a stopped one, was woken")
	}
	if n := rel.Watching(); n != 1 {
		t.Fatalf("watching %d after the release, want 1 (tgt-b)", n)
	}
}

// After the connection is lost (Redis restarted), the subscription comes
// back and wakes every watcher, since a release may have been announced
// while it was down; later releases are heard again.
func TestReleasesResubscribeAndWakeAll(t *testing.T) {
	srv := testenv.StartRedis(t)
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	s := redisstore.New(c, redisstore.WithPrefix(testPrefix))
	rel := redisstore.NewReleases(c, testPrefix, nil)
	runReleases(t, rel)
	waitHeard(t, rel, c)

	w, stop := rel.WatchRelease("tgt")
	defer stop()
	srv.Restart()
	select {
	case <-w:
	case <-time.After(30 * time.Second):
		t.Fatal("watcher not woken after the subscription came back")
	}

	// Heard again: a release after the restart wakes a new watcher. The
	// resubscription may still be under way when the first release goes
	// out; each try watches anew before releasing.
	testenv.Eventually(t, 20*time.Second, func() bool {
		w, stop := rel.WatchRelease("tgt")
		defer stop()
		l := acquire(t, s, "tgt", "r", time.Minute)
		if err := s.Release(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, "release heard after the restart")
}
