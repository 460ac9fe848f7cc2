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
