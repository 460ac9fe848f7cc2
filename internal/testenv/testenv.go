// Package testenv starts the real servers tests talk to: an in-process NATS
// JetStream server and a redis-server on a free port. Tests never share them.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// NATS starts an in-process JetStream server on a random loopback port with
// its store in a temp dir, and shuts it down when the test ends.
func NATS(t testing.TB) *natsserver.Server {
	t.Helper()
	return NATSAt(t, t.TempDir(), -1)
}

// NATSAt starts a JetStream server storing under dir on port (-1: random).
// Restarting a server on the same dir and port keeps the streams.
func NATSAt(t testing.TB, dir string, port int) *natsserver.Server {
	t.Helper()
	opts := &natsserver.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
	s, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatalf("testenv: nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("testenv: nats server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Redis starts a redis-server on a free loopback port (no persistence,
// noeviction) and returns its URL. Without the binary it fails under CI and
// skips elsewhere.
func Redis(t testing.TB) string {
	t.Helper()
	return StartRedis(t).URL
}

// RedisServer is a redis-server process a test can pause (a Redis that stops
// answering), resume and restart (losing its data: it runs without
// persistence). It is stopped when the test ends.
type RedisServer struct {
	URL string

	t    testing.TB
	bin  string
	port int
	dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	cancel context.CancelFunc
}

// StartRedis starts a redis-server on a free loopback port (no persistence,
// noeviction). Without the binary it fails under CI and skips elsewhere.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testenv: redis-server not installed (CI must apt-get install redis-server)")
		}
		t.Skip("redis-server not installed")
	}
	r := &RedisServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	r.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
	t.Cleanup(r.stop)
	r.start()
	return r
}

func (r *RedisServer) start() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, r.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--maxmemory-policy", "noeviction",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		cancel()
		r.t.Fatalf("testenv: start redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd, r.cancel = cmd, cancel
	r.mu.Unlock()
	opt, _ := redis.ParseURL(r.URL)
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(pctx).Err()
		pcancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("testenv: redis-server on port %d not ready: %v", r.port, err)
		}
		time.Sleep(20 * time.Millisecond) // readiness probe backoff, not a wait-for-result sleep
	}
}

// stop kills the server (also a paused one) and waits for it.
func (r *RedisServer) stop() {
	r.mu.Lock()
	cmd, cancel := r.cmd, r.cancel
	r.cmd, r.cancel = nil, nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cancel() // SIGKILL, which also ends a stopped process
	_ = cmd.Wait()
}

func (r *RedisServer) signal(sig os.Signal) {
	r.t.Helper()
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		r.t.Fatalf("testenv: redis-server not running")
	}
	if err := cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("testenv: signal redis-server: %v", err)
	}
}

// Pause stops the server process (SIGSTOP): connections stay open, nothing
// is answered, new connections hang in the listen backlog.
func (r *RedisServer) Pause() { r.t.Helper(); r.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *RedisServer) Resume() { r.t.Helper(); r.signal(syscall.SIGCONT) }

// Restart kills the server and starts a new one on the same port. Without
// persistence it comes back empty, as a Redis restarted without AOF or RDB.
func (r *RedisServer) Restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond until it holds or timeout passes, then fails the test
// with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, fmt.Sprintf(msg, args...))
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
