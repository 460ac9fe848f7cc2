package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/clients/natsbus"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
	"github.com/pathling-sync/pathling-sync/messages"
)

// clientEnv is a NATS with the service's stream and no service: what the
// client commands talk to.
type clientEnv struct {
	natsURL string
	js      jetstream.JetStream
}

func newClientEnv(t *testing.T) *clientEnv {
	t.Helper()
	// No "pathling-sync dev" addresses: only the environment counts.
	t.Setenv(devenv.DataDirEnv, t.TempDir())
	ns := testenv.NATS(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, js, natsbus.StreamConfig{
		Name: "PATHLING_SYNC", Subjects: []string{"pathling.sync.>"}, Storage: jetstream.FileStorage,
		MaxAge: 720 * time.Hour, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return &clientEnv{natsURL: ns.ClientURL(), js: js}
}

// Issue #9.1: any seed variable made the client commands run the service's
// validation and exit 2 with "targets.default.pathling.url: required".
func TestClientCommandsIgnoreSeedVariables(t *testing.T) {
	e := newClientEnv(t)
	redisURL := testenv.Redis(t)
	for _, seed := range []map[string]string{
		{"SOURCE_EXPORT_URL": `https://source/fhir/$export`}, // the migration guide's cron line
		{"SAVE_MODE": "merge"},
		{"TIMEOUT": "7200"},
		{"SINCE": "auto"},
		{"RESOURCE_TYPES": "Patient,Observation"},
		{"PATHLING_URL": "http://pathling:8080/fhir", "SOURCE_EXPORT_URL": "https://source/fhir"},
	} {
		env := map[string]string{"NATS_URL": e.natsURL, "REDIS_URL": redisURL}
		maps.Copy(env, seed)
		for _, args := range [][]string{{"request"}, {"events"}, {"status"}, {"replay", "--dry-run", "--from-seq", "1"}} {
			var out, errOut testenv.Buffer
			if code := run(context.Background(), args, &out, &errOut, envFrom(env)); code != exitOK {
				t.Errorf("%v with %v: exit %d\nstdout: %s\nstderr: %s", args, seed, code, out.String(), errOut.String())
			}
		}
	}
}

// request --wait without Redis for progress: one line saying so, then the
// outcome from NATS.
func TestRequestWaitWithoutRedis(t *testing.T) {
	e := newClientEnv(t)
	closedPort := closedPort(t)
	for name, tc := range map[string]struct {
		env  map[string]string
		line string
	}{
		"not configured": {
			env:  map[string]string{"NATS_URL": e.natsURL, "SOURCE_EXPORT_URL": "https://source/fhir"},
			line: "progress unavailable: Redis not configured (REDIS_URL); waiting for the outcome on NATS only\n",
		},
		"unreachable": {
			env:  map[string]string{"NATS_URL": e.natsURL, "REDIS_URL": fmt.Sprintf("redis://:secret@127.0.0.1:%d/0", closedPort)},
			line: fmt.Sprintf("progress unavailable: Redis at redis://:xxxxx@127.0.0.1:%d/0 unreachable; waiting for the outcome on NATS only\n", closedPort),
		},
	} {
		t.Run(name, func(t *testing.T) {
			id := "no-redis-" + strings.ReplaceAll(name, " ", "-")
			var out, errOut testenv.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run(context.Background(), []string{"request", "--wait", "--wait-timeout", "1m", "--id", id}, &out, &errOut, envFrom(tc.env))
			}()
			// Stand in for the service: answer the request once it is in the stream.
			testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(errOut.String(), "progress unavailable") },
				"request --wait to give up on progress: %s", errOut.String())
			publishOutcome(t, e.js, id)
			select {
			case code := <-done:
				if code != exitOK {
					t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no exit after the outcome\nstdout: %s\nstderr: %s", out.String(), errOut.String())
			}
			if errOut.String() != tc.line {
				t.Errorf("stderr:\n%q\nwant:\n%q", errOut.String(), tc.line)
			}
			if !strings.Contains(out.String(), "SyncCompleted") {
				t.Errorf("stdout lacks the outcome:\n%s", out.String())
			}
		})
	}
}

// publishOutcome publishes the SyncCompleted of request id for target
// "default", as the service would.
func publishOutcome(t *testing.T, js jetstream.JetStream, id string) {
	t.Helper()
	subjects := messages.Subjects{Prefix: "pathling.sync"}
	env := messages.Envelope{
		ID: messages.CompletedID(id), Source: "test", Type: messages.TypeCompleted, Subject: "default",
		ContentType: messages.ContentTypeJSON, Time: time.Now().UTC(),
	}
	body := fmt.Sprintf(`{"requestId":%q,"target":"default","outputs":1,"polls":1,"durationMs":5}`, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.PublishRequest(ctx, js, subjects.Completed("default"), env, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

// closedPort is a loopback port nothing listens on (it was free a moment ago).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
