package handlers

import "testing"

func evicted(s *seat) bool {
	select {
	case <-s.evicted:
		return true
	default:
		return false
	}
}

// The wait room seats at most perTarget per target and max in all; an
// earlier request (lower sequence) takes the seat of the target's latest.
func TestWaitRoomBoundsAndPrefersTheHead(t *testing.T) {
	r := newWaitRoom(3, 2)
	a5 := r.enter("a", 5)
	a7 := r.enter("a", 7)
	if a5 == nil || a7 == nil {
		t.Fatal("the first two of target a get seats")
	}
	if s := r.enter("a", 9); s != nil {
		t.Fatal("a third of target a got a seat (per target: 2)")
	}
	a3 := r.enter("a", 3) // earlier in the queue than 7: takes its seat
	if a3 == nil || !evicted(a7) || evicted(a5) {
		t.Fatalf("seq 3 should take the seat of seq 7: got %v, 7 evicted %v, 5 evicted %v", a3, evicted(a7), evicted(a5))
	}
	r.leave("a", a7) // the evicted one leaves: its seat is not its own any more
	b1 := r.enter("b", 1)
	if b1 == nil {
		t.Fatal("target b gets the third seat")
	}
	if s := r.enter("c", 1); s != nil {
		t.Fatal("a fourth seat in all (max 3)")
	}
	b0 := r.enter("b", 0) // all seats taken, but earlier than b's latest
	if b0 == nil || !evicted(b1) {
		t.Fatal("seq 0 of b should take the seat of seq 1")
	}
	if !r.earliest("a", a3) || r.earliest("a", a5) {
		t.Fatal("seq 3 is the earliest of target a, not seq 5")
	}
	r.leave("a", a5)
	if s := r.enter("c", 1); s == nil {
		t.Fatal("a freed seat is taken again")
	}
	r.leave("a", a3)
	r.leave("b", b0)
	if r.n != 1 || len(r.targets) != 1 {
		t.Fatalf("after leaving: %d seated over %d targets, want 1 over 1", r.n, len(r.targets))
	}
}

// releasesByHand is a Releases whose announcements the test makes.
type releasesByHand struct{ watches map[string][]chan struct{} }

func (r *releasesByHand) WatchRelease(target string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	r.watches[target] = append(r.watches[target], ch)
	return ch, func() {}
}

func (r *releasesByHand) release(target string) {
	for _, ch := range r.watches[target] {
		close(ch)
	}
	r.watches[target] = nil
}

// A request woken by a release after an earlier waiter took the lock and
// left its seat learns that the release was taken, and adopts a watch
// started at that win, which sees the winner's release.
func TestWaitRoomTellsALateWakerTheReleaseWasTaken(t *testing.T) {
	rel := &releasesByHand{watches: map[string][]chan struct{}{}}
	r := newWaitRoom(8, 4)
	late := &turn{releases: rel, target: "a"}
	late.watch(r)
	if _, _, taken := r.takenSince("a", late.wins); taken {
		t.Fatal("taken before any win")
	}
	rel.release("a") // the first run's release wakes both waiters
	r.won("a", rel)  // the earliest asks and wins before the late one runs
	next, wins, taken := r.takenSince("a", late.wins)
	if !taken || next == nil {
		t.Fatal("the late waiter is not told the release was taken")
	}
	late.adopt(next, wins)
	if _, _, taken := r.takenSince("a", late.wins); taken {
		t.Fatal("still taken after adopting the count")
	}
	select {
	case <-late.released:
		t.Fatal("the adopted watch fired before the winner released")
	default:
	}
	rel.release("a") // the winner's release
	select {
	case <-late.released:
	default:
		t.Fatal("the adopted watch missed the winner's release")
	}
}
