// Package clock is the service's one time source. Code that reads the time
// or waits on it takes a Clock, so that tests can drive time instead of
// sleeping.
package clock

import "time"

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

// Or returns c, or System when c is nil: option defaults in one place.
func Or(c Clock) Clock {
	if c == nil {
		return System{}
	}
	return c
}
