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

// RedisServer is a running redis-server process started by StartRedis.
type RedisServer struct {
	URL  string
	proc *os.Process
}

// Pause stops the process with SIGSTOP: it keeps its port and connections
// but answers nothing, like a Redis stalled by a fork or a full disk. The
// test's cleanup resumes it (before stopping it), or call Resume.
func (r *RedisServer) Pause(t testing.TB) {
	t.Helper()
	if err := r.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: pause redis-server: %v", err)
	}
	t.Cleanup(func() { _ = r.proc.Signal(syscall.SIGCONT) })
}

// Resume continues a paused process (SIGCONT).
func (r *RedisServer) Resume(t testing.TB) {
	t.Helper()
	if err := r.proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("testenv: resume redis-server: %v", err)
	}
}

// StartRedis is Redis, returning the process too (see Pause).
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testenv: redis-server not installed (CI must apt-get install redis-server)")
		}
		t.Skip("redis-server not installed")
	}
	port := freePort(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--maxmemory-policy", "noeviction",
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("testenv: start redis-server: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	opt, _ := redis.ParseURL(url)
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(pctx).Err()
		pcancel()
		if err == nil {
			return &RedisServer{URL: url, proc: cmd.Process}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: redis-server on port %d not ready: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond) // readiness probe backoff, not a wait-for-result sleep
	}
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
