package bench

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStats is a snapshot of a Redis server's command counters.
type RedisStats struct {
	Total    int64            // total_commands_processed (commands run by scripts included)
	Commands map[string]int64 // INFO commandstats calls per command
	CPU      time.Duration    // used_cpu_sys + used_cpu_user of the server
}

// ReadRedisStats reads INFO stats, commandstats and cpu.
func ReadRedisStats(ctx context.Context, rdb *redis.Client) (RedisStats, error) {
	s := RedisStats{Commands: map[string]int64{}}
	info, err := rdb.Info(ctx, "stats", "commandstats", "cpu").Result()
	if err != nil {
		return s, err
	}
	var cpu float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case k == "total_commands_processed":
			s.Total, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		case strings.HasPrefix(k, "cmdstat_"):
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			n, _ := strconv.ParseInt(calls, 10, 64)
			s.Commands[strings.TrimPrefix(k, "cmdstat_")] = n
		}
	}
	s.CPU = time.Duration(cpu * float64(time.Second))
	return s, nil
}

// Sub is s − earlier.
func (s RedisStats) Sub(earlier RedisStats) RedisStats {
	d := RedisStats{Total: s.Total - earlier.Total, CPU: s.CPU - earlier.CPU, Commands: map[string]int64{}}
	for k, v := range s.Commands {
		if n := v - earlier.Commands[k]; n > 0 {
			d.Commands[k] = n
		}
	}
	// The bench's own INFO calls are not the service's.
	d.Total -= d.Commands["info"]
	delete(d.Commands, "info")
	// Nor is the MONITOR sample.
	d.Total -= d.Commands["monitor"]
	delete(d.Commands, "monitor")
	return d
}

// MonitorSample counts, over a window, the commands Redis runs for its
// clients and those it runs inside Lua scripts (MONITOR tags them [n lua]):
// total_commands_processed counts both, a round trip only the first.
type MonitorSample struct {
	Client, Lua atomic.Int64
}

// ClientShare is the fraction of commands that came from clients (0 when
// nothing was seen).
func (m *MonitorSample) ClientShare() float64 {
	c, l := m.Client.Load(), m.Lua.Load()
	if c+l == 0 {
		return 0
	}
	return float64(c) / float64(c+l)
}

// SampleMonitor runs MONITOR on addr (host:port) from after delay for
// window, or until ctx ends. MONITOR slows Redis down, hence a short window.
func SampleMonitor(ctx context.Context, addr string, delay, window time.Duration) *MonitorSample {
	m := &MonitorSample{}
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return
		}
		defer conn.Close()
		end := time.Now().Add(window)
		_ = conn.SetDeadline(end)
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
		defer stop()
		if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
			return
		}
		r := bufio.NewReaderSize(conn, 1<<16)
		first, cont := true, false
		for {
			line, err := r.ReadSlice('\n')
			if err != nil && err != bufio.ErrBufferFull {
				return
			}
			wasCont := cont
			cont = err == bufio.ErrBufferFull
			if first || wasCont { // +OK, or the rest of a long line
				first = false
				continue
			}
			i := strings.IndexByte(string(line[:min(len(line), 64)]), '[')
			if i < 0 {
				continue
			}
			if strings.Contains(string(line[i:min(len(line), i+24)]), " lua]") {
				m.Lua.Add(1)
			} else {
				m.Client.Add(1)
			}
		}
	}()
	return m
}
