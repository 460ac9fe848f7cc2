package handlers

import (
	"testing"
	"time"
)

// A held lock vouches for its target only while its lease has more than the
// margin left, and only the lease that noted it (by token) drops it.
func TestHeldLocks(t *testing.T) {
	h := newHeldLocks()
	now := time.Now()
	if _, ok := h.busy("t1", now, time.Second); ok {
		t.Fatal("busy before any lock")
	}
	h.set("t1", "r1", Lease{Token: 1, Expires: now.Add(3 * time.Second)})
	if got, ok := h.busy("t1", now, time.Second); !ok || got != "r1" {
		t.Fatalf("busy = %q, %v; want r1", got, ok)
	}
	if _, ok := h.busy("t1", now.Add(2*time.Second), time.Second); ok {
		t.Fatal("busy with only the margin left on the lease")
	}
	h.set("t1", "r1", Lease{Token: 2, Expires: now.Add(3 * time.Second)}) // a retake
	h.drop("t1", 1)                                                       // the old lease's drop
	if _, ok := h.busy("t1", now, time.Second); !ok {
		t.Fatal("an older lease's drop removed the newer one")
	}
	h.drop("t1", 2)
	if _, ok := h.busy("t1", now, time.Second); ok {
		t.Fatal("busy after the drop")
	}
	var none *heldLocks
	none.set("t1", "r1", Lease{Token: 1, Expires: now.Add(time.Hour)})
	if _, ok := none.busy("t1", now, 0); ok {
		t.Fatal("a nil registry vouches for nothing")
	}
}
