package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// Servers are the NATS and Redis a run uses: given by URL, or started here
// (an in-process nats-server with JetStream and a redis-server child without
// persistence, both on free 127.0.0.1 ports) and stopped by Close.
type Servers struct {
	NATSURL, RedisURL string
	// Started says whether this process started them (and may wipe them).
	StartedNATS, StartedRedis bool

	ns    *natsserver.Server
	redis *exec.Cmd
	// RedisPID is the redis-server's pid when started here (0 otherwise).
	RedisPID int
}

// StartServers starts what natsURL and redisURL do not give.
func StartServers(ctx context.Context, dir, natsURL, redisURL string) (*Servers, error) {
	s := &Servers{NATSURL: natsURL, RedisURL: redisURL}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if s.NATSURL == "" {
		ns, err := natsserver.NewServer(&natsserver.Options{
			ServerName: "pathling-sync-bench",
			Host:       "127.0.0.1",
			Port:       natsserver.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   filepath.Join(dir, "nats"),
			// A large backlog of unacked messages is the point of some
			// scenarios: no per-connection limit should cut it short.
			MaxPending: 256 << 20,
			NoLog:      true,
			NoSigs:     true,
		})
		if err != nil {
			return nil, fmt.Errorf("bench: nats: %w", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(15 * time.Second) {
			ns.Shutdown()
			return nil, errors.New("bench: nats: not ready after 15s")
		}
		s.ns, s.NATSURL, s.StartedNATS = ns, ns.ClientURL(), true
	}
	if s.RedisURL == "" {
		if err := s.startRedis(ctx, dir); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func (s *Servers) startRedis(ctx context.Context, dir string) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("bench: redis-server not on PATH (install it, or give -redis URL): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return err
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
		"--dir", rdir, "--daemonize", "no", "--loglevel", "warning", "--maxclients", "20000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: redis-server: %w", err)
	}
	s.redis, s.RedisPID = cmd, cmd.Process.Pid
	s.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	s.StartedRedis = true
	opt, _ := redis.ParseURL(s.RedisURL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	return waitFor(ctx, 15*time.Second, "redis-server to answer PING", func() bool {
		return rdb.Ping(ctx).Err() == nil
	})
}

// Close stops what StartServers started.
func (s *Servers) Close() {
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	if s.redis != nil && s.redis.Process != nil {
		_ = s.redis.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.redis.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = s.redis.Process.Kill()
			<-done
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitFor checks cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
