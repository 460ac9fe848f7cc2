package natsbus

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureStreamCreatesThenUpdates(t *testing.T) {
	b := newBus(t) // creates the stream with the defaults
	ctx := context.Background()

	info, err := b.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != "PATHLING_SYNC" || !slices.Equal(c.Subjects, []string{"pathling.sync.>"}) ||
		c.Retention != jetstream.LimitsPolicy || c.MaxAge != 30*24*time.Hour ||
		c.Storage != jetstream.FileStorage || c.Replicas != 1 || c.Duplicates != 2*time.Minute ||
		c.MaxMsgs != -1 || c.MaxBytes != -1 {
		t.Fatalf("created stream config = %+v", c)
	}

	seq := b.request(t, "t1", "req-1")

	st, err := EnsureStream(ctx, b.js, StreamConfig{MaxAge: 24 * time.Hour, Duplicates: time.Minute, MaxMsgs: 1000, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	info, err = st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c = info.Config
	if c.MaxAge != 24*time.Hour || c.Duplicates != time.Minute || c.MaxMsgs != 1000 || c.MaxBytes != 1<<20 ||
		c.Storage != jetstream.FileStorage {
		t.Fatalf("updated stream config = %+v", c)
	}
	if info.State.Msgs != 1 || info.State.LastSeq != seq {
		t.Fatalf("update lost messages: state %+v", info.State)
	}

	// Back to the defaults: the limits are cleared again.
	st, err = EnsureStream(ctx, b.js, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxMsgs != -1 || c.MaxBytes != -1 || c.MaxAge != DefaultMaxAge {
		t.Fatalf("reset stream config = %+v", c)
	}
}

func TestEnsureStreamRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]StreamConfig{
		"duplicates beyond max age": {MaxAge: time.Minute, Duplicates: time.Hour},
		"dotted name":               {Name: "a.b"},
		"empty subject":             {Subjects: []string{""}},
		"negative limit":            {MaxMsgs: -5},
		"replicas":                  {Replicas: 7},
	} {
		t.Run(name, func(t *testing.T) {
			// js is never reached: the config is checked first.
			if _, err := EnsureStream(context.Background(), nil, cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
