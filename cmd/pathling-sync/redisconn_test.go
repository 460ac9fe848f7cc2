package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pathling-sync/pathling-sync/config"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// The connections handed to go-redis give one RawConn, made at dial time:
// its pool asks for it at every command, to peek at the socket.
func TestRedisConnectionsKeepTheirRawConn(t *testing.T) {
	srv := testenv.StartRedis(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URL, "redis://"), "/0")
	dial := pooledDialer((&net.Dialer{}).DialContext)
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("connection %T hides its socket: go-redis could not tell it was closed", c)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = sc.SyscallConn() })
	if allocs != 0 {
		t.Fatalf("SyscallConn allocates %.0f objects a call, want 0", allocs)
	}
}

// A pool full of connections that a Redis restart closed still serves every
// command after the restart: go-redis peeks at each connection it takes and
// drops a dead one.
func TestRedisRestartWithAFullPoolLosesNoCommand(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb, err := connectRedis(ctx, config.RedisConfig{URL: config.SecretURL(srv.URL + "?pool_size=8")})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	// Fill the pool: 8 commands at once, each holding a connection.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rdb.Eval(ctx, "redis.call('SET', KEYS[1], ARGV[1]) return 1", []string{fmt.Sprint("k", i)}, i).Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	srv.Restart()
	for i := range 20 {
		if err := rdb.Set(ctx, fmt.Sprint("after", i), i, 0).Err(); err != nil {
			t.Fatalf("command %d after the restart: %v", i, err)
		}
	}
}
