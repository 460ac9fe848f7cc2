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
