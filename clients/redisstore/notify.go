package redisstore

import (
	"context"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/handlers"
)

// releasedSuffix follows the key prefix in the name of the channel on which
// the store announces lock releases.
const releasedSuffix = "released"

// ReleaseChannel is the channel on which a store with key prefix prefix
// announces that a target's lock was released (or a queue ticket dropped):
// PUBLISH <prefix>released <target>, from the release scripts. It is a plain
// channel, not a sharded one, so Redis Cluster broadcasts it to every node
// and a subscriber on any node hears every target.
func ReleaseChannel(prefix string) string { return prefix + releasedSuffix }

func (s *Store) releasedChannel() string { return s.released }

// Subscriber opens a PUBLISH/SUBSCRIBE connection. A redis.UniversalClient
// (single node, Sentinel or Cluster) is one.
type Subscriber interface {
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

var _ Subscriber = (redis.UniversalClient)(nil)

// Releases hears the store's release announcements on one SUBSCRIBE
// connection per process and wakes the requests of this process that wait
// for those targets' locks (handlers.Releases). Run keeps the subscription;
// WatchRelease is cheap (no Redis call), so a queued request can start
// watching before it asks for the lock, and miss no release in between.
//
// Announcements are a hint, not a guarantee: one published while the
// connection is down (a Redis restart, a network cut) is lost. So every
// (re)subscription wakes every watcher, since a release may have been
// missed meanwhile; and the handler still asks again after queueRetry.
// It is safe for concurrent use.
type Releases struct {
	sub     Subscriber
	channel string
	log     *slog.Logger

	mu       sync.Mutex
	watchers map[string][]chan struct{} // per target, each closed (and dropped) on the next release
}

var _ handlers.Releases = (*Releases)(nil)

// NewReleases returns the release announcements of a store whose keys have
// prefix prefix (the store's WithPrefix; DefaultPrefix by default), heard
// through sub once Run runs. log may be nil.
func NewReleases(sub Subscriber, prefix string, log *slog.Logger) *Releases {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Releases{sub: sub, channel: ReleaseChannel(prefix), log: log, watchers: map[string][]chan struct{}{}}
}

// Run subscribes to the announcements and wakes the watchers of each
// released target until ctx ends. The connection is re-established after a
// failure (go-redis reconnects and subscribes again; a ping every few seconds
// finds a silent connection). It returns nil once ctx ended.
func (r *Releases) Run(ctx context.Context) error {
	ps := r.sub.Subscribe(ctx, r.channel)
	defer ps.Close()
	// A large buffer: every release of every target comes through here.
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	subscribed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			switch m := m.(type) {
			case *redis.Message:
				r.wake(m.Payload)
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				if subscribed {
					r.log.InfoContext(ctx, "release announcements: subscribed again; waking every queued request waiting here, a release may have been missed",
						"channel", r.channel)
				} else {
					r.log.DebugContext(ctx, "release announcements: subscribed", "channel", r.channel)
				}
				subscribed = true
				r.wakeAll()
			}
		}
	}
}

// WatchRelease starts watching target's lock: released is closed once a
// release of it is announced after the call (or when one may have been
// missed). stop ends the watch; released may then stay open. Without Run,
// released never closes.
func (r *Releases) WatchRelease(target string) (released <-chan struct{}, stop func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	r.watchers[target] = append(r.watchers[target], ch)
	r.mu.Unlock()
	return ch, func() { r.unwatch(target, ch) }
}

func (r *Releases) unwatch(target string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.watchers[target]
	for i, c := range list {
		if c == ch {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			list = list[:last]
			break
		}
	}
	if len(list) == 0 {
		delete(r.watchers, target)
		return
	}
	r.watchers[target] = list
}

// wake closes the watchers of target: each watch sees one release.
func (r *Releases) wake(target string) {
	r.mu.Lock()
	list := r.watchers[target]
	delete(r.watchers, target)
	r.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}

func (r *Releases) wakeAll() {
	r.mu.Lock()
	all := r.watchers
	r.watchers = map[string][]chan struct{}{}
	r.mu.Unlock()
	for _, list := range all {
		for _, ch := range list {
			close(ch)
		}
	}
}

// Watching reports how many watches are open (for tests and status).
func (r *Releases) Watching() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, list := range r.watchers {
		n += len(list)
	}
	return n
}
