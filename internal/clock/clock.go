// Package clock is the service's one time source. Code that reads the time
// or waits on it takes a Clock, so that tests can drive time instead of
// sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and waits on it. After must deliver once the clock
// has reached Now()+d.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// System is the wall clock.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Func is a Clock whose Now is f (a fixed or shifted time in tests, a clock
// skew in the emulators); it waits on real timers.
type Func func() time.Time

// Now returns f().
func (f Func) Now() time.Time { return f() }

// After returns time.After(d).
func (Func) After(d time.Duration) <-chan time.Time { return time.After(d) }

// AfterFuncer is a Clock that calls a function after a duration with no
// goroutine waiting meanwhile (a runtime timer). System and Func are.
type AfterFuncer interface {
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// AfterFunc returns time.AfterFunc(d, f)'s Stop.
func (System) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// AfterFunc returns time.AfterFunc(d, f)'s Stop.
func (Func) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// AfterFunc calls f in its own goroutine once c has reached Now()+d, unless
// stop is called first (stop reports whether it prevented the call). A
// Clock that is no AfterFuncer (a test's) gets a goroutine waiting on
// c.After.
func AfterFunc(c Clock, d time.Duration, f func()) (stop func() bool) {
	if a, ok := c.(AfterFuncer); ok {
		return a.AfterFunc(d, f)
	}
	var mu sync.Mutex
	state := 0 // 0 pending, 1 called, 2 stopped
	stopped := make(chan struct{})
	go func() {
		select {
		case <-c.After(d):
		case <-stopped:
			return
		}
		mu.Lock()
		call := state == 0
		if call {
			state = 1
		}
		mu.Unlock()
		if call {
			f()
		}
	}()
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if state != 0 {
			return false
		}
		state = 2
		close(stopped)
		return true
	}
}

// Or returns c, or System when c is nil: option defaults in one place.
func Or(c Clock) Clock {
	if c == nil {
		return System{}
	}
	return c
}
