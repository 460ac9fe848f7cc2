package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"
)

// natsNode is one nats-server process; restarting it keeps its port and JetStream store.
type natsNode struct {
	p    *proc
	name string
	url  string
}

// startNATS starts one nats-server, or a cluster of n with JetStream on every node. Stores are
// written with sync_interval: always, as docs/deploying.md asks of a single node.
func (h *harness) startNATS(n int) {
	h.t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		ports[i] = freePort(h.t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", freePort(h.t))
	}
	for i := range n {
		name := fmt.Sprintf("nats-%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q, sync_interval: always }\n",
			name, ports[i], filepath.Join(h.dir, name))
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: faults, listen: %q, routes: [%s] }\n",
				strings.TrimPrefix(routes[i], "nats-route://"), strings.Join(routes, ", "))
		}
		path := filepath.Join(h.dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			h.t.Fatal(err)
		}
		node := &natsNode{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i])}
		node.p = h.spawn(name, h.bins.nats, []string{"-c", path})
		h.nats = append(h.nats, node)
	}
	for _, node := range h.nats {
		h.waitNATSNode(node)
	}
}

// waitNATSNode waits until the node answers JetStream requests (in a cluster: has a meta leader).
func (h *harness) waitNATSNode(node *natsNode) {
	h.t.Helper()
	h.waitFor(30*time.Second, node.name+" ready", func() (bool, error) {
		nc, err := nats.Connect(node.url, nats.Timeout(time.Second))
		if err != nil {
			return false, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false, err
		}
		ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil, err
	})
}

func (h *harness) natsURLs() string {
	urls := make([]string, len(h.nats))
	for i, n := range h.nats {
		urls[i] = n.url
	}
	return strings.Join(urls, ",")
}

// redisNode is one redis-server process; restarting it keeps its port and directory (and so its
// AOF file, when it has one).
type redisNode struct {
	p    *proc
	addr string
}

// startRedis starts a single redis-server with AOF (appendfsync always) or without any
// persistence, noeviction, and a password when h.redisPassword is set.
func (h *harness) startRedis(aof bool) {
	h.t.Helper()
	port := freePort(h.t)
	dir := filepath.Join(h.dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--maxmemory-policy", "noeviction", "--appendonly", "no"}
	if aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}
	if h.redisPassword != "" {
		args = append(args, "--requirepass", h.redisPassword)
	}
	node := &redisNode{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	node.p = h.spawn("redis", h.bins.redis, args)
	h.redis = append(h.redis, node)
	h.rdb = redis.NewClient(&redis.Options{Addr: node.addr, Password: h.redisPassword,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	h.waitRedis()
}

// startRedisCluster starts three masters and joins them with redis-cli --cluster create.
func (h *harness) startRedisCluster() {
	h.t.Helper()
	var addrs []string
	for i := range 3 {
		port := freePort(h.t)
		dir := filepath.Join(h.dir, fmt.Sprintf("redis-%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			h.t.Fatal(err)
		}
		node := &redisNode{addr: fmt.Sprintf("127.0.0.1:%d", port)}
		node.p = h.spawn(fmt.Sprintf("redis-%d", i+1), h.bins.redis, []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
			"--maxmemory-policy", "noeviction"})
		h.redis = append(h.redis, node)
		addrs = append(addrs, node.addr)
	}
	for _, node := range h.redis {
		c := redis.NewClient(&redis.Options{Addr: node.addr, DialTimeout: time.Second})
		h.waitFor(20*time.Second, node.p.name+" ready", func() (bool, error) {
			err := c.Ping(h.ctx).Err()
			return err == nil, err
		})
		_ = c.Close()
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, h.bins.redisCLI,
		append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, node := range h.redis {
		c := redis.NewClient(&redis.Options{Addr: node.addr, DialTimeout: time.Second})
		h.waitFor(30*time.Second, node.p.name+" cluster_state:ok", func() (bool, error) {
			info, err := c.ClusterInfo(h.ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok"), err
		})
		_ = c.Close()
	}
	h.redisCluster = true
	h.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	h.waitRedis()
}

func (h *harness) waitRedis() {
	h.t.Helper()
	h.waitFor(20*time.Second, "redis ready", func() (bool, error) {
		ctx, cancel := context.WithTimeout(h.ctx, time.Second)
		defer cancel()
		err := h.rdb.Ping(ctx).Err()
		return err == nil, err
	})
}

// redisMasterFor returns the Redis Cluster master holding key.
func (h *harness) redisMasterFor(key string) *redisNode {
	h.t.Helper()
	cc := h.rdb.(*redis.ClusterClient)
	c, err := cc.MasterForKey(h.ctx, key)
	if err != nil {
		h.t.Fatalf("master for %s: %v", key, err)
	}
	addr := c.Options().Addr
	for _, n := range h.redis {
		if n.addr == addr {
			return n
		}
	}
	h.t.Fatalf("master %s of %s is none of ours", addr, key)
	return nil
}

// sourceOptions shapes the Bulk Data source emulator.
type sourceOptions struct {
	exportDelay time.Duration
	clockOffset time.Duration
}

// startSource starts the source emulator (10 patients: 70 resources in 4 types).
func (h *harness) startSource(o sourceOptions) {
	h.t.Helper()
	port := freePort(h.t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"--addr", addr, "--patients", "10", "--seed", "1", "--export-polls", "1",
		"--export-delay", o.exportDelay.String(), "--retry-after", "1s"}
	if o.clockOffset != 0 {
		args = append(args, "--clock-offset", o.clockOffset.String())
	}
	h.source = h.spawn("source", h.bins.source, args)
	h.sourceBase = "http://" + addr
	h.waitFor(20*time.Second, "source emulator ready", func() (bool, error) { return h.httpOK(h.sourceBase + "/fhir/metadata") })
}

// startPathling starts the Pathling emulator in pull mode, allowed to pull from the source.
func (h *harness) startPathling(clockOffset time.Duration) {
	h.t.Helper()
	port := freePort(h.t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"--addr", addr, "--mode", "pull", "--allow-export-url", h.sourceBase + "/fhir",
		"--poll-interval", "250ms"}
	if clockOffset != 0 {
		flag := h.pathlingClockFlag()
		if flag == "" {
			h.skip("the Pathling emulator has no clock offset option: clock skew is not testable")
		}
		args = append(args, flag, clockOffset.String())
	}
	h.pathling = h.spawn("pathling", h.bins.pathling, args)
	h.pathlingBase = "http://" + addr
	h.waitFor(20*time.Second, "pathling emulator ready", func() (bool, error) { return h.httpOK(h.pathlingBase + "/fhir/metadata") })
}

// pathlingClockFlag finds the emulator's clock offset flag, if it has one.
func (h *harness) pathlingClockFlag() string {
	out, _ := exec.Command(h.bins.pathling, "-h").CombinedOutput()
	for _, f := range []string{"-clock-offset", "-clock-skew"} {
		if strings.Contains(string(out), f+" ") || strings.Contains(string(out), f+"\n") {
			return "-" + f
		}
	}
	return ""
}

// replicaOptions shapes the generated configuration of the pathling-sync replicas.
type replicaOptions struct {
	streamReplicas int
	logLevel       string
	// auth is the target's pathling.auth block; nil: a static bearer token (a secret).
	auth map[string]any
}

type replica struct {
	p         *proc
	id        string
	admin     string
	configPth string
}

// startReplicas starts n `pathling-sync serve` processes sharing one generated configuration
// (each with its own admin port and instance id) and waits until each is ready.
func (h *harness) startReplicas(n int, o replicaOptions) {
	h.t.Helper()
	first := len(h.replicas)
	for i := first; i < first+n; i++ {
		id := fmt.Sprintf("replica-%d", i+1)
		adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(h.t))
		cfg := h.replicaConfig(id, adminAddr, o)
		raw, err := yaml.Marshal(cfg)
		if err != nil {
			h.t.Fatal(err)
		}
		path := filepath.Join(h.dir, id+".yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			h.t.Fatal(err)
		}
		r := &replica{id: id, admin: "http://" + adminAddr, configPth: path}
		r.p = h.spawn(id, h.bins.sync, []string{"serve", "--config", path})
		h.replicas = append(h.replicas, r)
	}
	for _, r := range h.replicas[first:] {
		h.waitReady(r)
	}
}

func (h *harness) waitReady(r *replica) {
	h.t.Helper()
	h.waitFor(60*time.Second, r.id+" ready", func() (bool, error) {
		if !r.p.running() {
			return false, fmt.Errorf("%s exited: %s", r.id, lastLine(r.p.logPath))
		}
		return h.httpOK(r.admin + "/readyz")
	})
}

func (h *harness) replicaConfig(id, adminAddr string, o replicaOptions) map[string]any {
	streamReplicas := o.streamReplicas
	if streamReplicas == 0 {
		streamReplicas = 1
	}
	logLevel := o.logLevel
	if logLevel == "" {
		logLevel = "info"
	}
	auth := o.auth
	if auth == nil {
		auth = map[string]any{"type": "bearer", "token": h.bearerToken}
	}
	redisCfg := map[string]any{"lockTTL": "6s"}
	if h.redisCluster {
		var addrs []string
		for _, n := range h.redis {
			addrs = append(addrs, n.addr)
		}
		redisCfg["addrs"] = addrs
	} else {
		redisCfg["url"] = "redis://" + h.redis[0].addr + "/0"
	}
	if h.redisPassword != "" {
		redisCfg["password"] = h.redisPassword
	}
	return map[string]any{
		"nats": map[string]any{
			"url":      h.natsURLs(),
			"stream":   map[string]any{"replicas": streamReplicas},
			"consumer": map[string]any{"ackWait": "6s"},
		},
		"redis": redisCfg,
		"admin": map[string]any{"addr": adminAddr},
		"log":   map[string]any{"level": logLevel},
		"service": map[string]any{
			"instanceId": id, "shutdownGrace": "2s", "queueRetry": "1s",
		},
		"targets": map[string]any{
			"default": map[string]any{
				"pathling": map[string]any{
					"url": h.pathlingBase + "/fhir", "requestTimeout": "2s", "auth": auth,
				},
				"allowedExportUrls": []string{h.sourceBase + "/fhir"},
				"timeout":           "90s",
				"overlap":           "1s",
				"poll":              map[string]any{"initial": "250ms", "factor": 1.5, "max": "1s", "jitter": 0.1},
				"retry":             map[string]any{"initial": "300ms", "factor": 2, "max": "2s", "jitter": 0.1},
			},
		},
	}
}

// skip ends the scenario without a verdict, saying why in its row.
func (h *harness) skip(reason string) {
	h.t.Helper()
	h.row.skipped = reason
	h.t.Skip(reason)
}

// lastLine returns the last non-empty line of a log file (a process's parting words).
func lastLine(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return lines[len(lines)-1]
}
