// Package testenv starts the real servers tests talk to: a NATS JetStream server (in-process, or
// the binary PATHLING_SYNC_NATS_SERVER names) and a redis-server on a free port. Tests never
// share them.
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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// NATSServerEnv names the environment variable that selects an external nats-server binary
// (for instance Debian's /usr/sbin/nats-server 2.9) for every test instead of the embedded
// server, so that the NATS-facing tests run against that version too (scripts/ci-nats29.sh).
const NATSServerEnv = "PATHLING_SYNC_NATS_SERVER"

// NATSServer is a JetStream server a test talks to.
type NATSServer struct {
	url string
}

// ClientURL is the server's nats:// URL.
func (s *NATSServer) ClientURL() string { return s.url }

// Connect opens a client connection and its JetStream context, closed when
// the test ends.
func (s *NATSServer) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.url)
	if err != nil {
		t.Fatalf("testenv: connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: jetstream: %v", err)
	}
	return nc, js
}

// NATS starts a JetStream server on a free loopback port with its store in a temp dir, and shuts
// it down when the test ends: the binary named by PATHLING_SYNC_NATS_SERVER when that is set,
// otherwise an in-process server (the nats-server/v2 module's version).
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	if bin := os.Getenv(NATSServerEnv); bin != "" {
		return externalNATS(t, bin)
	}
	return &NATSServer{url: NATSAt(t, t.TempDir(), -1).ClientURL()}
}

// NATSAt starts an in-process JetStream server storing under dir on port (-1: random).
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

// externalNATS starts the nats-server binary bin with JetStream on a free loopback port and waits
// until its JetStream answers. A port taken between choosing and binding makes the server exit:
// it is tried again on another port.
func externalNATS(t testing.TB, bin string) *NATSServer {
	t.Helper()
	var lastErr error
	for range 3 {
		s, err := startExternalNATS(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("testenv: %s: %v", bin, lastErr)
	return nil
}

func startExternalNATS(t testing.TB, bin string) (*NATSServer, error) {
	port := freePort(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "nats-server.log")
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port),
		"-sd", filepath.Join(dir, "jetstream"), "-l", logFile)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := jetStreamReady(url)
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			exited <- werr // stop (never called now) must not block; keep the result
			log, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("exited (%v) before it was ready: %s", werr, tail(log, 600))
		default:
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("not ready on port %d within 15s (%v): %s", port, err, tail(log, 600))
		}
		time.Sleep(20 * time.Millisecond) // readiness probe backoff, not a wait-for-result sleep
	}
	t.Cleanup(stop)
	return &NATSServer{url: url}, nil
}

// jetStreamReady reports whether the server at url accepts connections and answers a JetStream
// account request.
func jetStreamReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
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
	r := &RedisServer{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(r.stop)
	// A free port is free only until someone binds it: another test process
	// may pick the same one and start its redis-server first. Ours then
	// fails to bind, and another test's server would answer our pings (and
	// vanish when that test ends). So check who answers, and try another
	// port if it is not ours.
	for attempt := 1; ; attempt++ {
		r.port = freePort(t)
		r.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 5 {
			t.Fatalf("testenv: %v", err)
		}
		t.Logf("testenv: %v; trying another port", err)
	}
}

// start runs redis-server on r.port and waits until it answers; an error
// says it is not this process that answers.
func (r *RedisServer) start() error {
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
		info, err := c.InfoMap(pctx, "server").Result()
		pcancel()
		if err == nil {
			pid := info["Server"]["process_id"]
			if pid == strconv.Itoa(cmd.Process.Pid) {
				return nil
			}
			r.stop()
			return fmt.Errorf("port %d is another redis-server's (pid %s), not the one started (pid %d)", r.port, pid, cmd.Process.Pid)
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
	if err := r.start(); err != nil {
		r.t.Fatalf("testenv: restart: %v", err)
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
