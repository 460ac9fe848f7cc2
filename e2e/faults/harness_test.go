package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// envSelect chooses the scenarios: "all" or "1" (every one), "ci" (the bounded subset), or a
// comma-separated list of names. Unset: the suite skips.
const envSelect = "PATHLING_SYNC_FAULTS"

// envBin names a directory holding pre-built nats-server, pathling-sync, pathling-emulator and
// bulk-source-emulator; unset: the suite builds them into a temp dir.
const envBin = "PATHLING_SYNC_FAULTS_BIN"

// envTable names a file the table is written to (as well as to the test log).
const envTable = "PATHLING_SYNC_FAULTS_TABLE"

const (
	streamName   = "PATHLING_SYNC"
	consumerName = "pathling-sync"
	target       = "default"
)

// binaries are the executables scenarios run.
type binaries struct {
	nats, sync, pathling, source, redis, redisCLI string
}

// buildBinaries builds the project's commands and nats-server (from the module cache, the
// version in go.mod) unless envBin points at them; redis-server and redis-cli come from PATH.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	dir := os.Getenv(envBin)
	if dir == "" {
		dir = t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		for _, pkg := range []string{"github.com/nats-io/nats-server/v2", "../../cmd/pathling-sync",
			"../../cmd/pathling-emulator", "../../cmd/bulk-source-emulator"} {
			out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go build %s: %v\n%s", pkg, err, out)
			}
		}
	}
	b := binaries{
		nats: filepath.Join(dir, "nats-server"), sync: filepath.Join(dir, "pathling-sync"),
		pathling: filepath.Join(dir, "pathling-emulator"), source: filepath.Join(dir, "bulk-source-emulator"),
	}
	for _, p := range []string{b.nats, b.sync, b.pathling, b.source} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("binary missing: %v", err)
		}
	}
	var err error
	if b.redis, err = exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not on PATH (apt-get install redis-server): %v", err)
	}
	if b.redisCLI, err = exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not on PATH (apt-get install redis-tools): %v", err)
	}
	return b
}

// harness holds one scenario's processes, clients and observations. Every scenario gets its own.
type harness struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	bins binaries
	http *http.Client
	row  *row

	procs    []*proc
	nats     []*natsNode
	redis    []*redisNode
	source   *proc
	pathling *proc
	replicas []*replica

	redisCluster  bool
	redisPassword string
	rdb           redis.UniversalClient
	sourceBase    string // http://127.0.0.1:port (FHIR base: + /fhir)
	pathlingBase  string

	nc *nats.Conn
	js jetstream.JetStream

	// secrets are strings that must appear in no event, log line, status output or metric.
	secrets     []string
	bearerToken string

	mu        sync.Mutex
	requested []string        // request ids in publication order
	seen      map[string]bool // request ids published
	events    []event         // the stream's messages read so far
	nextSeq   uint64          // next stream sequence to read
	extraScan []string        // files (besides *.log) the secret scan reads

	samples sampler
	touched int // resources touch changed so far
	// dataChecked is set by finalSync: the Pathling store was compared with the source.
	dataChecked bool
	dataEqual   bool
	dataNote    string
}

func newHarness(t *testing.T, bins binaries, r *row) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, ctx: ctx, dir: t.TempDir(), bins: bins, row: r,
		http: &http.Client{Timeout: 5 * time.Second},
		seen: map[string]bool{}, nextSeq: 1,
	}
	h.bearerToken = "faults-bearer-" + randomHex(12)
	h.secrets = []string{h.bearerToken}
	t.Cleanup(func() {
		cancel()
		h.samples.stop()
		if h.nc != nil {
			h.nc.Close()
		}
		if h.rdb != nil {
			_ = h.rdb.Close()
		}
		// Replicas first (they talk to the rest), then everything else.
		for i := len(h.procs) - 1; i >= 0; i-- {
			if err := h.procs[i].stopForGood(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "pathling-sync-faults-"+strings.ReplaceAll(t.Name(), "/", "-"))
			_ = os.RemoveAll(keep)
			if err := os.CopyFS(keep, os.DirFS(h.dir)); err == nil {
				t.Logf("logs and configuration kept in %s", keep)
			}
		}
	})
	return h
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// setup is the shape of a scenario's world.
type setup struct {
	replicas    int           // pathling-sync processes (default 2)
	natsNodes   int           // 1 (default) or 3 (a cluster; the stream gets 3 replicas)
	redis       string        // "plain" (default, no persistence), "aof" or "cluster"
	exportDelay time.Duration // how long each source export stays in progress (default 2s)
	clockOffset time.Duration // added to the source's and Pathling's clocks
	staggered   bool          // start the replicas one after another (each ready first)
	replica     replicaOptions
}

// start brings the scenario's world up: NATS, Redis, source, Pathling, replicas, the harness's
// own NATS connection and the background sampler.
func (h *harness) start(s setup) {
	h.t.Helper()
	if s.replicas == 0 {
		s.replicas = 2
	}
	if s.natsNodes == 0 {
		s.natsNodes = 1
	}
	if s.exportDelay == 0 {
		s.exportDelay = 2 * time.Second
	}
	h.startNATS(s.natsNodes)
	if s.natsNodes > 1 && s.replica.streamReplicas == 0 {
		s.replica.streamReplicas = 3
	}
	switch s.redis {
	case "cluster":
		h.startRedisCluster()
	case "aof":
		h.startRedis(true)
	default:
		h.startRedis(false)
	}
	h.startSource(sourceOptions{exportDelay: s.exportDelay, clockOffset: s.clockOffset})
	h.startPathling(s.clockOffset)
	if s.staggered {
		for range s.replicas {
			h.startReplicas(1, s.replica)
		}
	} else {
		h.startReplicas(s.replicas, s.replica)
	}
	h.connectBus()
	h.samples.start(h)
}

func (h *harness) connectBus() {
	h.t.Helper()
	nc, err := nats.Connect(h.natsURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(2*time.Second))
	if err != nil {
		h.t.Fatalf("connect NATS: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatalf("jetstream: %v", err)
	}
	h.nc, h.js = nc, js
}
