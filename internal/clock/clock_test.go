package clock

import (
	"testing"
	"time"
)

func TestFuncAndOr(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := Or(Func(func() time.Time { return at }))
	if got := c.Now(); !got.Equal(at) {
		t.Fatalf("Func.Now = %v, want %v", got, at)
	}
	if _, ok := Or(nil).(System); !ok {
		t.Fatalf("Or(nil) is %T, want System", Or(nil))
	}
	select {
	case <-System{}.After(time.Millisecond):
	case <-time.After(10 * time.Second):
		t.Fatal("System.After(1ms) did not deliver within 10 s")
	}
}

// afterOnly is a Clock with After only, as a test's clock may be.
type afterOnly struct{ ch chan time.Time }

func (afterOnly) Now() time.Time                         { return time.Time{} }
func (a afterOnly) After(time.Duration) <-chan time.Time { return a.ch }

func TestAfterFunc(t *testing.T) {
	called := make(chan struct{})
	AfterFunc(System{}, time.Millisecond, func() { close(called) })
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("System: f not called within 10 s")
	}

	// A clock without AfterFunc: f runs when its After delivers, and not
	// after stop.
	c := afterOnly{ch: make(chan time.Time, 1)}
	called = make(chan struct{})
	AfterFunc(c, time.Hour, func() { close(called) })
	c.ch <- time.Time{}
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("After-only clock: f not called within 10 s of After delivering")
	}
	stop := AfterFunc(c, time.Hour, func() { t.Error("f called after stop") })
	if !stop() {
		t.Fatal("stop before the call reported false")
	}
	if stop() {
		t.Fatal("second stop reported true")
	}
}
