package testenv

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func TestServersStart(t *testing.T) {
	s := NATS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	// With an external binary, the tests really talk to it.
	if bin := os.Getenv(NATSServerEnv); bin != "" {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatal(err)
		}
		if v := nc.ConnectedServerVersion(); !strings.Contains(string(out), "v"+v) {
			t.Fatalf("connected to nats-server %s, but %s is %s", v, bin, out)
		}
	}
	opt, err := redis.ParseURL(Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if got := c.ConfigGet(context.Background(), "maxmemory-policy").Val()["maxmemory-policy"]; got != "noeviction" {
		t.Fatalf("maxmemory-policy = %q", got)
	}
}

// Two test processes may pick the same free port; the second redis-server
// then fails to bind, and the first answers its pings. start must notice
// that the server answering is not the one it started (CI once ran a test
// against another package's Redis, which vanished when that test ended).
func TestRedisStartNoticesAnotherServersPort(t *testing.T) {
	first := StartRedis(t)
	second := &RedisServer{t: t, bin: first.bin, dir: t.TempDir(), port: first.port, URL: first.URL}
	t.Cleanup(second.stop)
	err := second.start()
	if err == nil || !strings.Contains(err.Error(), "another redis-server") {
		t.Fatalf("start on a port another redis-server holds: %v, want an error naming it", err)
	}
}
