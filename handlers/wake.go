package handlers

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// This file lets a queued request (concurrency queue) whose target is busy
// wait in this process for the lock's release, announced by the store
// (Releases), and ask for the lock again at once, rather than be redelivered
// after QueueRetry. It holds its delivery meanwhile (the consumer keeps it
// alive with InProgress). Announcements may be lost: the wait ends after
// QueueRetry anyway, so a lost one costs what the redelivery cost before.
// How many wait here is bounded (waitRoom); the others are redelivered
// after QueueRetry as without announcements.

// Releases announces that a target's lock was released (or a queue ticket
// dropped), so that queued requests may ask for it again. Announcements
// are a hint: one may be lost, and a spurious one costs an Acquire.
type Releases interface {
	// WatchRelease starts watching target's lock: released is closed once a
	// release of it is announced after the call (or when the announcer may
	// have missed one). stop ends the watch; released may then stay open.
	// It must be cheap: it is called before every queued Acquire.
	WatchRelease(target string) (released <-chan struct{}, stop func())
}

// Precedence tells a queued request whether an earlier request for its
// target may still be on its way: in the stream before it and not yet
// settled, delivered here, to another replica or not yet. A request with
// none before it has no one to wait for: it asks for the lock at once,
// instead of first only taking its place and asking again after the settle
// delay (QueueTicket.Settle), which keeps requests fetched together in
// stream order.
type Precedence interface {
	// EarlierUnsettled reports whether a request on subject with a stream
	// sequence below seq may not be settled yet. With an error the answer
	// must be true: the request then settles as without Precedence.
	EarlierUnsettled(ctx context.Context, subject string, seq uint64) (bool, error)
}

// Defaults of Config.QueueWaiters and Config.QueueWaitersPerTarget.
const (
	DefaultQueueWaiters          = 64
	DefaultQueueWaitersPerTarget = 4
)

// turn is a queued delivery's attempts at its target's lock while it waits
// in this process. Its watch on the lock's release starts before each
// attempt, so that a release between the store's answer and the wait is
// not missed. Its seat in the wait room, once it has one, is kept until
// the delivery stops waiting here, so that the earliest of the requests
// waiting here for a target is known while they wake.
type turn struct {
	releases Releases
	target   string
	released <-chan struct{}
	stop     func() // ends the watch
	seat     *seat  // nil until waitTurn finds one
	wins     uint64 // the target's queued wins here when the watch started (waitRoom.won)
	first    bool   // the delivery's first attempt
	again    bool   // set by waitTurn: ask for the lock again now
}

// firstAttempt is true for the first Acquire of a delivery; a nil turn
// (no announcements) is always a first attempt.
func (t *turn) firstAttempt() bool { return t == nil || t.first }

// watch starts a new watch on the lock's release, ending the previous one.
// The wins counted before it started tell later whether a release it sees
// was taken by a request waiting here (waitRoom.takenSince).
func (t *turn) watch(r *waitRoom) {
	t.wins = r.winsOf(t.target)
	if t.stop != nil {
		t.stop()
	}
	t.released, t.stop = t.releases.WatchRelease(t.target)
}

// adopt replaces the turn's watch by the room's, started when the lock was
// last won here (waitRoom.won), so a release since then is not missed.
func (t *turn) adopt(released <-chan struct{}, wins uint64) {
	if t.stop != nil {
		t.stop()
	}
	t.released, t.stop, t.wins = released, func() {}, wins
}

// lockInTurn is lock, for a queued request with announcements of releases
// repeated as long as it waits here for its turn (waitTurn).
func (s *Syncer) lockInTurn(ctx context.Context, log *slog.Logger, d Delivery, in intake, acq AcquireRequest) (*driver, Disposition, bool) {
	if acq.Queue == nil || s.releases == nil {
		return s.lock(ctx, log, d, in, acq, nil)
	}
	ticket := *acq.Queue
	acq.Queue = &ticket
	t := &turn{releases: s.releases, target: acq.Target, first: true}
	defer func() {
		t.stop()
		if t.seat != nil {
			s.room.leave(acq.Target, t.seat)
		}
	}()
	for {
		t.watch(s.room)
		dr, disp, ok := s.lock(ctx, log, d, in, acq, t)
		if !t.again {
			if ok {
				s.room.won(acq.Target, s.releases)
			}
			return dr, disp, ok
		}
		t.again, t.first = false, false
		// The ticket holds the request's place already: no settling again.
		ticket.Settle = false
	}
}

// waitTurn is what a queued request does while the lock is not its turn
// yet and its time in the queue has not run out: with a seat in the wait
// room, wait here until the lock's release is announced or QueueRetry
// passes, then ask again (t.again); else be redelivered after QueueRetry.
// Of the requests waiting here for one target, only the earliest asks on a
// release (the others would be refused: the lock goes to the head of the
// queue, and none of them is ahead of the earliest); they wait for the next.
func (s *Syncer) waitTurn(ctx context.Context, d Delivery, in intake, t *turn) Disposition {
	later := Disposition{Action: Nak, Delay: s.queueRetry}
	if !s.seated(t, in.target, d.StreamSeq) {
		return later
	}
	timer := time.NewTimer(s.queueRetry)
	defer timer.Stop()
	for {
		select {
		case <-t.released:
			if next, wins, taken := s.room.takenSince(in.target, t.wins); taken {
				// A request that waited here took this release's turn and
				// left before this one woke: wait for its release.
				t.adopt(next, wins)
				continue
			}
			if !s.room.earliest(in.target, t.seat) {
				t.watch(s.room)
				continue
			}
		case <-timer.C:
			// No release announced (none yet, or it was lost), or only
			// releases an earlier request took: ask again, as the
			// redelivery would have.
		case <-t.seat.evicted:
			// A request earlier in the queue took the seat.
			return later
		case <-ctx.Done():
			return s.retryLater(ctx)
		}
		t.again = true
		return Disposition{}
	}
}

// seated reports whether the turn has a seat in the wait room, taking one
// (for the request with stream sequence seq) when it has none yet; false
// for a nil turn (no announcements) or when no seat is free.
func (s *Syncer) seated(t *turn, target string, seq uint64) bool {
	if t == nil {
		return false
	}
	if t.seat == nil {
		t.seat = s.room.enter(target, seq)
	}
	return t.seat != nil
}

// settleTurn is what a queued request does once its first attempt took its
// place in the queue (QueueTicket.Settle): ask again after the settle delay,
// as before, but waiting here with a seat in the wait room rather than being
// redelivered, which costs a NAK, a delivery, its decoding and its span for
// nothing. The store sees the same attempts at the same times either way,
// so the queue's order is the same. Without a seat (or evicted from it), the
// delivery is redelivered after the delay, as without announcements.
func (s *Syncer) settleTurn(ctx context.Context, d Delivery, in intake, t *turn) Disposition {
	delay := min(s.queueRetry, settleDelay)
	later := Disposition{Action: Nak, Delay: delay}
	if !s.seated(t, in.target, d.StreamSeq) {
		return later
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.seat.evicted:
		return later
	case <-ctx.Done():
		return s.retryLater(ctx)
	}
	t.again = true
	return Disposition{}
}

// waitRoom bounds the queued deliveries waiting in this process: each holds
// a worker slot, so a long queue must not take them all. At most max wait
// in all and perTarget per target; when a target's seats (or all seats) are
// taken, a request earlier in the queue (lower stream sequence) than the
// target's latest sitter takes its seat, so that the head of the queue,
// whose turn comes at the next release, waits here whenever it is here.
type waitRoom struct {
	max, perTarget int

	mu      sync.Mutex
	n       int
	targets map[string][]*seat
	// Per target, the queued requests that won its lock here, and a watch
	// on its release started as the last one won. A request woken by a
	// release may run after the earliest waiter took the lock and left its
	// seat; the count tells it the release was taken (it would otherwise
	// find itself earliest and ask in vain), and the watch, started before
	// the winner could release, is the one it waits on next. Bounded by the
	// targets; the count only grows.
	wins map[string]*targetWins
}

type targetWins struct {
	n        uint64
	next     <-chan struct{}
	stopNext func()
}

type seat struct {
	seq     uint64
	evicted chan struct{} // closed when an earlier request takes the seat
}

func newWaitRoom(max, perTarget int) *waitRoom {
	return &waitRoom{max: max, perTarget: perTarget, targets: map[string][]*seat{}, wins: map[string]*targetWins{}}
}

// won counts a queued request's win of target's lock here and starts the
// watch on its release that the requests woken by the same release adopt.
func (r *waitRoom) won(target string, releases Releases) {
	next, stop := releases.WatchRelease(target)
	r.mu.Lock()
	w := r.wins[target]
	if w == nil {
		w = &targetWins{}
		r.wins[target] = w
	}
	w.n++
	prev := w.stopNext
	w.next, w.stopNext = next, stop
	r.mu.Unlock()
	if prev != nil {
		prev()
	}
}

func (r *waitRoom) winsOf(target string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.wins[target]; w != nil {
		return w.n
	}
	return 0
}

// takenSince reports whether a queued request won target's lock here since
// the count was seen, with the watch started at the last win and the count.
func (r *waitRoom) takenSince(target string, seen uint64) (next <-chan struct{}, wins uint64, taken bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.wins[target]
	if w == nil || w.n == seen {
		return nil, seen, false
	}
	return w.next, w.n, true
}

// enter returns a seat for the request with stream sequence seq, or nil.
func (r *waitRoom) enter(target string, seq uint64) *seat {
	r.mu.Lock()
	defer r.mu.Unlock()
	seats := r.targets[target]
	s := &seat{seq: seq, evicted: make(chan struct{})}
	if len(seats) < r.perTarget && r.n < r.max {
		r.targets[target] = append(seats, s)
		r.n++
		return s
	}
	if len(seats) == 0 {
		return nil
	}
	latest := 0
	for i := range seats {
		if seats[i].seq > seats[latest].seq {
			latest = i
		}
	}
	if seats[latest].seq <= seq {
		return nil
	}
	close(seats[latest].evicted)
	seats[latest] = s
	return s
}

// earliest reports whether s is the seat of the earliest request waiting
// here for target.
func (r *waitRoom) earliest(target string, s *seat) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.targets[target] {
		if o.seq < s.seq {
			return false
		}
	}
	return true
}

// leave frees the seat (if it was not taken from it).
func (r *waitRoom) leave(target string, s *seat) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seats := r.targets[target]
	i := slices.Index(seats, s)
	if i < 0 {
		return
	}
	seats = slices.Delete(seats, i, i+1)
	r.n--
	if len(seats) == 0 {
		delete(r.targets, target)
		return
	}
	r.targets[target] = seats
}
