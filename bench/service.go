package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServiceConfig is what a scenario sets in the generated configuration of
// `pathling-sync serve`; zero values keep the service's defaults.
type ServiceConfig struct {
	NATSURL, RedisURL string
	StandIn           *StandIn
	Targets           []string
	KeyPrefix         string
	MaxWorkers        int
	AckWait           time.Duration
	LockTTL           time.Duration
	QueueRetry        time.Duration
	PollInitial       time.Duration
	PollFactor        float64
	PollMax           time.Duration
	PollJitter        *float64
	PollFloor         time.Duration
	// PollPolicy, when set, gives a target's poll policy (history or
	// seed; "" keeps the default).
	PollPolicy func(target string) string
	LogLevel   string
	PProf      bool
}

// yaml writes the configuration file.
func (c ServiceConfig) yaml(adminAddr string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "nats:\n  url: %q\n  consumer:\n    maxAckPending: -1\n", c.NATSURL)
	if c.MaxWorkers > 0 {
		fmt.Fprintf(&b, "    maxWorkers: %d\n", c.MaxWorkers)
	}
	if c.AckWait > 0 {
		fmt.Fprintf(&b, "    ackWait: %s\n", c.AckWait)
	}
	fmt.Fprintf(&b, "redis:\n  url: %q\n  keyPrefix: %q\n", c.RedisURL, c.KeyPrefix)
	if c.LockTTL > 0 {
		fmt.Fprintf(&b, "  lockTTL: %s\n", c.LockTTL)
	}
	fmt.Fprintf(&b, "admin:\n  addr: %q\n  pprof: %t\n", adminAddr, c.PProf)
	level := c.LogLevel
	if level == "" {
		level = "info"
	}
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: json\nservice:\n  instanceId: bench\n  shutdownGrace: 2s\n", level)
	if c.QueueRetry > 0 {
		fmt.Fprintf(&b, "  queueRetry: %s\n", c.QueueRetry)
	}
	// One poll block for every target (a YAML anchor keeps 10,000 targets short).
	var poll bytes.Buffer
	if c.PollInitial > 0 {
		fmt.Fprintf(&poll, "initial: %s, ", c.PollInitial)
	}
	if c.PollFactor > 0 {
		fmt.Fprintf(&poll, "factor: %g, ", c.PollFactor)
	}
	if c.PollMax > 0 {
		fmt.Fprintf(&poll, "max: %s, ", c.PollMax)
	}
	if c.PollJitter != nil {
		fmt.Fprintf(&poll, "jitter: %g, ", *c.PollJitter)
	}
	if c.PollFloor > 0 {
		fmt.Fprintf(&poll, "floor: %s, ", c.PollFloor)
	}
	// A target with its own policy merges it into the common poll block.
	policy := func(t string) string {
		if c.PollPolicy == nil {
			return ""
		}
		return c.PollPolicy(t)
	}
	pollOf := func(t string) string {
		switch pol := policy(t); {
		case pol != "" && poll.Len() > 0:
			return fmt.Sprintf("    poll: {<<: *poll, policy: %s}\n", pol)
		case pol != "":
			return fmt.Sprintf("    poll: {policy: %s}\n", pol)
		case poll.Len() > 0:
			return "    poll: *poll\n"
		}
		return ""
	}
	src := c.StandIn.SourceURL()
	b.WriteString("targets:\n")
	for i, t := range c.Targets {
		fmt.Fprintf(&b, "  %s:\n    pathling: {url: %q}\n", t, c.StandIn.BaseURL(t))
		if i == 0 {
			fmt.Fprintf(&b, "    allowedExportUrls: &src [%q]\n    defaults: &defaults {exportUrl: %q}\n", src, src)
			block := strings.TrimSuffix(poll.String(), ", ")
			switch pol := policy(t); {
			case poll.Len() > 0 && pol != "":
				// The anchor inside the first target's block, its own policy beside it.
				fmt.Fprintf(&b, "    poll: {<<: &poll {%s}, policy: %s}\n", block, pol)
			case poll.Len() > 0:
				fmt.Fprintf(&b, "    poll: &poll {%s}\n", block)
			default:
				b.WriteString(pollOf(t))
			}
			continue
		}
		b.WriteString("    allowedExportUrls: *src\n    defaults: *defaults\n")
		b.WriteString(pollOf(t))
	}
	return b.Bytes()
}

// Service is a running `pathling-sync serve` child process.
type Service struct {
	cmd     *exec.Cmd
	Pid     int
	Admin   string // http://host:port
	LogPath string
	// StartUp is the time from exec to the first 200 of /readyz.
	StartUp time.Duration
	done    chan struct{}
}

// BuildService builds ./cmd/pathling-sync of the module at root into dir.
func BuildService(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "pathling-sync")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pathling-sync")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go build ./cmd/pathling-sync: %w\n%s", err, b)
	}
	return out, nil
}

// StartService writes the configuration into dir and runs `bin serve` with
// it, its logs in dir/<name>.log, and waits until /readyz answers 200.
func StartService(ctx context.Context, bin, dir, name string, c ServiceConfig) (*Service, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminAddr := "127.0.0.1:" + strconv.Itoa(port)
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, c.yaml(adminAddr), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = serviceEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", bin, err)
	}
	s := &Service{cmd: cmd, Pid: cmd.Process.Pid, Admin: "http://" + adminAddr, LogPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.done) }()
	hc := &http.Client{Timeout: time.Second}
	err = waitFor(ctx, 60*time.Second, "pathling-sync /readyz", func() bool {
		select {
		case <-s.done:
			return true
		default:
		}
		resp, err := hc.Get(s.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	s.StartUp = time.Since(start)
	select {
	case <-s.done:
		return nil, fmt.Errorf("bench: pathling-sync exited at start-up (%s); its log: %s\n%s", cmd.ProcessState, logPath, tail(logPath, 2000))
	default:
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w; log: %s", err, logPath)
	}
	return s, nil
}

// serviceEnv is the bench's environment without PATHLING_SYNC_*, NATS_URL,
// REDIS_URL and the seed's variables, which would override the generated
// configuration.
func serviceEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PATHLING_SYNC_"), strings.HasPrefix(k, "OTEL_"):
			continue
		}
		switch k {
		case "NATS_URL", "REDIS_URL", "PATHLING_URL", "SOURCE_EXPORT_URL", "SAVE_MODE", "TIMEOUT", "RESOURCE_TYPES", "SINCE":
			continue
		}
		env = append(env, kv)
	}
	// OTEL_* is dropped too: the bench measures the service, not an OTLP pipeline.
	return env
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// Stop sends SIGTERM and waits (up to 15 s, then SIGKILL).
func (s *Service) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Usage is a process's CPU time and resident memory at one moment.
type Usage struct {
	At  time.Time
	CPU time.Duration
	RSS int64 // bytes
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times (100 on Linux).
const clockTick = 10 * time.Millisecond

// ProcUsage reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status (VmRSS).
func ProcUsage(pid int) (Usage, error) {
	u := Usage{At: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return u, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	u.CPU = time.Duration(utime+stime) * clockTick
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, nil
}

// Usage reads the service's.
func (s *Service) Usage() (Usage, error) { return ProcUsage(s.Pid) }

// Snapshot fetches the named pprof profile (heap, goroutine, …) from the
// admin listener (admin.pprof must be on) into path.
func (s *Service) Snapshot(ctx context.Context, name, path string) error {
	return s.fetch(ctx, s.Admin+"/debug/pprof/"+name, path)
}

// Profile fetches a CPU profile of secs seconds from the admin listener
// (admin.pprof must be on) into path.
func (s *Service) Profile(ctx context.Context, secs int, path string) error {
	return s.fetch(ctx, s.Admin+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), path)
}

func (s *Service) fetch(ctx context.Context, url, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// The service's counters the bench reads from its admin /metrics:
// roundTripsMetric is its Redis client's round trips (a go-redis hook: one
// per command, script call or pipeline); the other two are the Go
// runtime's heap allocations (objects and bytes), from Prometheus' Go
// collector.
const (
	roundTripsMetric = "pathling_sync_redis_round_trips_total"
	mallocsMetric    = "go_memstats_mallocs_total"
	allocBytesMetric = "go_memstats_alloc_bytes_total"
)

// ServiceCounters are the service's counters at one scrape.
type ServiceCounters struct {
	RedisRoundTrips int64
	Mallocs         int64 // heap objects allocated so far
	AllocBytes      int64 // heap bytes allocated so far
}

// Counters scrapes the admin /metrics for the service's counters.
func (s *Service) Counters(ctx context.Context) (ServiceCounters, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ServiceCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ServiceCounters{}, fmt.Errorf("bench: metrics: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return ServiceCounters{}, err
	}
	text := string(body)
	var c ServiceCounters
	for _, m := range []struct {
		name string
		v    *int64
	}{{roundTripsMetric, &c.RedisRoundTrips}, {mallocsMetric, &c.Mallocs}, {allocBytesMetric, &c.AllocBytes}} {
		if *m.v, err = parseMetric(text, m.name); err != nil {
			return ServiceCounters{}, err
		}
	}
	return c, nil
}

// parseMetric finds a counter's value in a Prometheus text exposition (its
// labels, if any, are the exporter's scope labels).
func parseMetric(text, name string) (int64, error) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest)
		f, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("bench: %s: %w", name, err)
		}
		return int64(f), nil
	}
	return 0, fmt.Errorf("bench: no %s in /metrics", name)
}
