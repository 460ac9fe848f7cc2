package requester_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/internal/clock"
	"github.com/pathling-sync/pathling-sync/messages"
	"github.com/pathling-sync/pathling-sync/messages/requester"
)

var errInvalid = errors.New("pkg: invalid option")

// A bad value leaves the options alone and says what is wrong, wrapped in
// the package's own error.
func TestSetsValidate(t *testing.T) {
	for name, set := range map[string]requester.Set{
		"prefix":  requester.Subjects(messages.Subjects{Prefix: "a..b"}),
		"source":  requester.Source(""),
		"logger":  requester.Logger(nil),
		"timeout": requester.PublishTimeout(0),
		"clock":   requester.Clock(nil),
	} {
		o := requester.Defaults()
		err := set.Apply(&o, errInvalid)
		if !errors.Is(err, errInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if o.Source != "pathling-sync" || o.Log == nil || o.PublishTimeout != 5*time.Second || o.Clock == nil {
			t.Errorf("%s: options changed: %+v", name, o)
		}
	}
	o := requester.Defaults()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, set := range []requester.Set{
		requester.Source("replica-1"), requester.PublishTimeout(time.Second),
		requester.Clock(clock.Func(func() time.Time { return at })), requester.Subjects(messages.Subjects{Prefix: "x.y"}),
	} {
		if err := set.Apply(&o, errInvalid); err != nil {
			t.Fatal(err)
		}
	}
	if o.Source != "replica-1" || o.PublishTimeout != time.Second || !o.Clock.Now().Equal(at) || o.Subjects.Prefix != "x.y" {
		t.Fatalf("options %+v", o)
	}
}
