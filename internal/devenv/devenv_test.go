package devenv_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func urlPort(t *testing.T, raw string) int {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" {
		t.Errorf("%s is not on 127.0.0.1", raw)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startNATS(t *testing.T, dir string, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, u, err := devenv.StartNATS(ctx, dir, port)
	if err != nil {
		t.Fatalf("StartNATS: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.JetStreamConfig().SyncAlways {
		t.Error("JetStream does not sync always")
	}
	if got, want := s.JetStreamConfig().StoreDir, filepath.Join(dir, "nats"); !strings.HasPrefix(got, want) {
		t.Errorf("store dir %s, want under %s", got, want)
	}
	return u
}

// useJetStream checks that the server at u takes a stream and a message.
func useJetStream(t *testing.T, u string) {
	t.Helper()
	nc, err := nats.Connect(u)
	if err != nil {
		t.Fatalf("connect %s: %v", u, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream on %s: %v", u, err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("hi")); err != nil {
		t.Fatalf("publish on %s: %v", u, err)
	}
}

func TestStartNATSTakesAnotherPortWhenTheUsualIsBusy(t *testing.T) {
	port := freePort(t)
	first := startNATS(t, t.TempDir(), port)
	if got := urlPort(t, first); got != port {
		t.Fatalf("first server on %d, want the preferred %d", got, port)
	}
	second := startNATS(t, t.TempDir(), port)
	if got := urlPort(t, second); got == port || got <= 0 {
		t.Fatalf("second server on %d, want another port than %d", got, port)
	}
	useJetStream(t, first)
	useJetStream(t, second)
}

func TestStartNATSKeepsStreamsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, u, err := devenv.StartNATS(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	useJetStream(t, u)
	s.Shutdown()
	s.WaitForShutdown()

	u2 := startNATS(t, dir, 0)
	nc, err := nats.Connect(u2)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream lost after restart: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("after restart: %v, %+v", err, info)
	}
}

func startRedis(t *testing.T, port int) (string, *redis.Client) {
	t.Helper()
	addr, stop, err := devenv.StartRedis(context.Background(), port)
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(stop)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return addr, c
}

func TestStartRedisTakesAnotherPortWhenTheUsualIsBusy(t *testing.T) {
	port := freePort(t)
	first, _ := startRedis(t, port)
	if first != "127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("first server on %s, want port %d", first, port)
	}
	second, c := startRedis(t, port)
	if second == first || !strings.HasPrefix(second, "127.0.0.1:") {
		t.Fatalf("second server on %s", second)
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisKeysExpireInRealTime(t *testing.T) {
	_, c := startRedis(t, 0)
	ctx := context.Background()
	if err := c.Set(ctx, "plain", "v", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	// Expiry set from inside a script, as the lock scripts do.
	if err := c.Eval(ctx, `redis.call("HSET", KEYS[1], "request", "r1"); return redis.call("PEXPIRE", KEYS[1], ARGV[1])`,
		[]string{"scripted"}, 200).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "kept", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, "plain", "scripted").Val(); n != 2 {
		t.Fatalf("keys gone at once: %d exist", n)
	}
	start := time.Now()
	testenv.Eventually(t, 2*time.Second, func() bool {
		return c.Exists(ctx, "plain", "scripted").Val() == 0
	}, "keys with a 200ms TTL still exist after 2s")
	if elapsed := time.Since(start); elapsed < 150*time.Millisecond {
		t.Errorf("keys expired after %s, before their TTL", elapsed)
	}
	if c.Exists(ctx, "kept").Val() != 1 {
		t.Error("a key without TTL expired")
	}
}

// lockScript uses the commands and Lua idioms of clients/redisstore's
// scripts: INCR, multi-field HSET, HGET of a missing field (false),
// HMGET, PEXPIRE, PERSIST, ZADD NX, ZRANGE, ZREM, ZREMRANGEBYSCORE, DEL,
// string.format and table replies.
const lockScript = `
local holder = redis.call("HGET", KEYS[1], "request")
if holder and holder ~= ARGV[1] then return {0, holder} end
redis.call("ZADD", KEYS[3], "NX", ARGV[3], ARGV[1])
redis.call("ZADD", KEYS[3], "NX", 999, ARGV[1])
local head = redis.call("ZRANGE", KEYS[3], 0, 0)[1]
local token = redis.call("INCR", KEYS[2])
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], "request", ARGV[1], "token", string.format("%d", token))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local fields = redis.call("HMGET", KEYS[1], "request", "token", "absent")
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", 0)
return {1, token, head, fields[1], fields[2], tostring(fields[3])}
`

func TestLuaScriptsRun(t *testing.T) {
	_, c := startRedis(t, 0)
	ctx := context.Background()
	keys := []string{"p:{t}lock", "p:{t}fence", "p:{t}queue"}
	script := redis.NewScript(lockScript)

	res, err := script.Run(ctx, c, keys, "req-1", 60000, 5).Slice() // EVALSHA, then EVAL
	if err != nil {
		t.Fatalf("script: %v", err)
	}
	want := []any{int64(1), int64(1), "req-1", "req-1", "1", "false"}
	if len(res) != len(want) {
		t.Fatalf("reply %v, want %v", res, want)
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("reply[%d] = %#v, want %#v (reply %v)", i, res[i], want[i], res)
		}
	}
	if pttl := c.PTTL(ctx, keys[0]).Val(); pttl <= 0 || pttl > time.Minute {
		t.Errorf("lock PTTL %s", pttl)
	}
	// A second request sees the holder; the script is cached now (EVALSHA).
	res, err = script.Run(ctx, c, keys, "req-2", 60000, 6).Slice()
	if err != nil || res[0] != int64(0) || res[1] != "req-1" {
		t.Errorf("second request: %v, %v", res, err)
	}
	if err := c.Eval(ctx, `return redis.call("PERSIST", KEYS[1])`, keys[:1]).Err(); err != nil {
		t.Fatal(err)
	}
	if pttl := c.PTTL(ctx, keys[0]).Val(); pttl != -1 {
		t.Errorf("PTTL after PERSIST = %s, want -1 (no TTL)", pttl)
	}
}

func TestAddrsRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := devenv.ReadAddrs(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadAddrs without file: %v, want fs.ErrNotExist", err)
	}
	a := devenv.Addrs{
		NATSURL: "nats://127.0.0.1:4223", RedisURL: "redis://127.0.0.1:6380/0",
		PathlingURL: "http://127.0.0.1:8081/fhir", SourceURL: "http://127.0.0.1:8082/fhir",
		AdminAddr: "127.0.0.1:9464", PID: os.Getpid(),
	}
	if err := devenv.WriteAddrs(dir, a); err != nil {
		t.Fatal(err)
	}
	got, err := devenv.ReadAddrs(dir)
	if err != nil || got != a {
		t.Fatalf("ReadAddrs = %+v, %v; want %+v", got, err, a)
	}
	a.NATSURL = "nats://127.0.0.1:5000"
	if err := devenv.WriteAddrs(dir, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := devenv.ReadAddrs(dir); got != a {
		t.Errorf("after rewrite: %+v", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != devenv.AddrsFile {
		t.Errorf("data folder holds %v, want only %s", entries, devenv.AddrsFile)
	}
	if err := devenv.RemoveAddrs(dir); err != nil {
		t.Fatal(err)
	}
	if err := devenv.RemoveAddrs(dir); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := devenv.ReadAddrs(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after remove: %v", err)
	}
}

func TestListenPreferred(t *testing.T) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l1, err := devenv.ListenPreferred(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	if l1.Addr().String() != addr {
		t.Fatalf("first listener on %s, want %s", l1.Addr(), addr)
	}
	l2, err := devenv.ListenPreferred(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	host, p, _ := net.SplitHostPort(l2.Addr().String())
	if host != "127.0.0.1" || p == strconv.Itoa(port) {
		t.Errorf("second listener on %s", l2.Addr())
	}
	if _, err := devenv.ListenPreferred("127.0.0.1:notaport"); err == nil {
		t.Error("bad address accepted")
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv(devenv.DataDirEnv, "")
	if got := devenv.DefaultDir(); got != ".pathling-sync" {
		t.Errorf("DefaultDir() = %q", got)
	}
	t.Setenv(devenv.DataDirEnv, "/tmp/x")
	if got := devenv.DefaultDir(); got != "/tmp/x" {
		t.Errorf("DefaultDir() with %s = %q", devenv.DataDirEnv, got)
	}
}
