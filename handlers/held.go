package handlers

import (
	"sync"
	"time"
)

// heldLocks is what this replica knows without asking the store: which
// targets its own drivers hold the lock of, for which request, and until
// when the lease is surely valid. A forbid request for such a target is
// refused without the lock's round trip (Locker.Begin would only say "held"):
// in a storm of requests for one busy target, that is half of each answer's
// store round trips.
//
// Only "held" is trusted, never "free": a target missing here goes to the
// store as before. An entry is trusted while its lease has more than a third
// of its TTL left; a driver renews every third, so a driver that stopped
// renewing (store trouble, a lost lock) stops vouching for the target long
// before the store could hand the lock to anyone else. The driver drops its
// entry before it releases the lock.
type heldLocks struct {
	mu sync.Mutex
	m  map[string]heldLock // by target
}

type heldLock struct {
	requestID string
	token     int64
	expires   time.Time // the lease's, taken before the round trip that granted or renewed it
}

func newHeldLocks() *heldLocks { return &heldLocks{m: map[string]heldLock{}} }

// set records (or renews) target's lease for requestID.
func (h *heldLocks) set(target, requestID string, l Lease) {
	if h == nil || l.Expires.IsZero() {
		return
	}
	h.mu.Lock()
	h.m[target] = heldLock{requestID: requestID, token: l.Token, expires: l.Expires}
	h.mu.Unlock()
}

// drop forgets target's lease of token (another lease, taken since, stays).
func (h *heldLocks) drop(target string, token int64) {
	if h == nil {
		return
	}
	h.mu.Lock()
	if e, ok := h.m[target]; ok && e.token == token {
		delete(h.m, target)
	}
	h.mu.Unlock()
}

// busy returns the request whose run holds target's lock here, when its
// lease still has more than margin left at now.
func (h *heldLocks) busy(target string, now time.Time, margin time.Duration) (requestID string, ok bool) {
	if h == nil {
		return "", false
	}
	h.mu.Lock()
	e, found := h.m[target]
	h.mu.Unlock()
	if !found || !now.Add(margin).Before(e.expires) {
		return "", false
	}
	return e.requestID, true
}
