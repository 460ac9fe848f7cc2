package redisstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/clients/redisstore"
)

func TestCheckPersistence(t *testing.T) {
	ctx := context.Background()
	_, c := newStore(t) // started with --save "" --appendonly no

	p, err := redisstore.CheckPersistence(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || p.AOF || p.RDB != "" {
		t.Fatalf("persistence of a server without any = %+v", p)
	}
	if err := c.ConfigSet(ctx, "save", "3600 1").Err(); err != nil {
		t.Fatal(err)
	}
	if p, err := redisstore.CheckPersistence(ctx, c); err != nil || !p.Enabled() || p.RDB != "3600 1" || p.AOF {
		t.Fatalf("with snapshots: %+v, %v", p, err)
	}
	if err := c.ConfigSet(ctx, "save", "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if p, err := redisstore.CheckPersistence(ctx, c); err != nil || !p.Enabled() || !p.AOF {
		t.Fatalf("with AOF: %+v, %v", p, err)
	}

	// A user whose ACL forbids CONFIG (as on managed Redis) cannot check.
	if err := c.Do(ctx, "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	opt := c.Options()
	limited := redis.NewClient(&redis.Options{Addr: opt.Addr, Username: "app", Password: "app-pw"})
	defer limited.Close()
	if _, err := redisstore.CheckPersistence(ctx, limited); !errors.Is(err, redisstore.ErrConfigUnavailable) {
		t.Fatalf("CONFIG denied by ACL: %v, want ErrConfigUnavailable", err)
	}

	// A Redis-protocol server without CONFIG (the dev mode's embedded one).
	m := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer mc.Close()
	if _, err := redisstore.CheckPersistence(ctx, mc); !errors.Is(err, redisstore.ErrConfigUnavailable) {
		t.Fatalf("server without CONFIG: %v, want ErrConfigUnavailable", err)
	}
}
