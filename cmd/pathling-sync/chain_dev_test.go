package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// In dev, a sync of "default" that imports something is chained to the
// target "replica" (a second Pathling emulator): one `request --wait`
// yields a SyncCompleted for both. An empty incremental sync chains nothing.
func TestDevChainsDefaultToReplica(t *testing.T) {
	dev := startDev(t)
	dir, devOut, devErr := dev.dir, dev.out, dev.errOut
	if !strings.Contains(devOut.String(), `target "replica", chained`) {
		t.Fatalf("dev banner does not show the replica and its chain:\n%s", devOut.String())
	}

	var out, errOut testenv.Buffer
	if code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m", "--id", "dev-full-1", "--correlation-id", "walkthrough"}, &out, &errOut, envFrom(nil)); code != 0 {
		t.Fatalf("request --wait exited %d\n%s\n%s\ndev: %s", code, out.String(), errOut.String(), devErr.String())
	}

	a, _ := devenv.ReadAddrs(dir)
	nc, err := nats.Connect(a.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), "PATHLING_SYNC")
	if err != nil {
		t.Fatal(err)
	}
	last := func(subject string) *jetstream.RawStreamMsg {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m, err := stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return nil
		}
		return m
	}
	var replicaDone *jetstream.RawStreamMsg
	testenv.Eventually(t, 30*time.Second, func() bool {
		replicaDone = last("pathling.sync.completed.replica")
		return replicaDone != nil
	}, "a SyncCompleted for replica (dev log: %s)", devErr.String())
	if id := replicaDone.Header.Get(messages.HeaderID); id != "chain:default-to-replica:dev-full-1/completed" {
		t.Fatalf("replica outcome %q", id)
	}
	var c messages.SyncCompleted
	if err := json.Unmarshal(replicaDone.Data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Target != "replica" || c.Outputs == 0 || c.CorrelationID != "walkthrough" || c.RequestedBy != "chain:default-to-replica" {
		t.Errorf("replica's SyncCompleted: %s", replicaDone.Data)
	}
	t.Logf("replica: %s", replicaDone.Data)

	// An incremental sync without changes is empty: the rule (nonEmpty)
	// does not fire. Wait until the chain consumer has acknowledged the
	// SyncCompleted before looking.
	out = testenv.Buffer{}
	if code := run(context.Background(), []string{"request", "--wait", "--wait-timeout", "2m", "--since", "auto", "--id", "dev-incr-1"}, &out, &errOut, envFrom(nil)); code != 0 {
		t.Fatalf("incremental request exited %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "no changes") {
		t.Fatalf("the incremental sync was not empty:\n%s", out.String())
	}
	incr := last("pathling.sync.completed.default")
	if incr == nil || incr.Header.Get(messages.HeaderID) != "dev-incr-1/completed" {
		t.Fatalf("last completed of default: %v", incr)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cons, err := js.PushConsumer(ctx, "PATHLING_SYNC", "pathling-sync-chains")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= incr.Sequence
	}, "the chain consumer to acknowledge the empty sync's SyncCompleted")
	r := last("pathling.sync.requested.replica")
	if r == nil {
		t.Fatal("no request of replica")
	}
	if id := r.Header.Get(messages.HeaderID); id != "chain:default-to-replica:dev-full-1" {
		t.Errorf("an empty sync was chained: the last request of replica is %q", id)
	}
}
