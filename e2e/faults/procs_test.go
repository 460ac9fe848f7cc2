package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one real process of a scenario. Its stdout and stderr go to <dir>/<name>.log, appended
// across restarts, so the secret scan reads every line it ever wrote.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// spawn starts a process and registers it for the scenario's cleanup.
func (h *harness) spawn(name, bin string, args []string, env ...string) *proc {
	h.t.Helper()
	p := &proc{name: name, bin: bin, args: args, env: env, logPath: filepath.Join(h.dir, name+".log")}
	h.procs = append(h.procs, p)
	if err := p.start(h.dir); err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	return p
}

func (p *proc) start(home string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("%s is still running", p.name)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	cmd := exec.Command(p.bin, p.args...)
	// A clean environment: the machine's NATS_URL, REDIS_URL or PATHLING_SYNC_* must not leak in.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	return nil
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

func (p *proc) running() bool {
	_, exited := p.current()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	cmd, _ := p.current()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// waitExit waits for the process to end, at most d.
func (p *proc) waitExit(t testing.TB, d time.Duration) {
	t.Helper()
	_, exited := p.current()
	select {
	case <-exited:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p.name, d)
	}
}

func (p *proc) kill9(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	p.waitExit(t, 10*time.Second)
}

func (p *proc) restart(t testing.TB, home string) {
	t.Helper()
	if err := p.start(home); err != nil {
		t.Fatalf("restart %s: %v", p.name, err)
	}
}

// stopForGood ends a process at cleanup: SIGCONT (it may be stopped), then SIGKILL.
func (p *proc) stopForGood() error {
	cmd, exited := p.current()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not die", p.name, cmd.Process.Pid)
	}
}

// freePort returns a loopback port free at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 100 ms until it reports true or timeout passes; a cond error is kept
// for the failure message (servers may be down on purpose while we wait).
func (h *harness) waitFor(timeout time.Duration, what string, cond func() (bool, error)) {
	h.t.Helper()
	if err := h.tryWaitFor(timeout, cond); err != nil {
		h.row.notes = append(h.row.notes, fmt.Sprintf("%s: %v", what, err))
		h.t.Fatalf("%s: %v", what, err)
	}
}

func (h *harness) tryWaitFor(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not within %s (last error: %w)", timeout, last)
			}
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-tick.C:
		case <-h.ctx.Done():
			return h.ctx.Err()
		}
	}
}

// hold keeps a fault in place for d: the fault's length is the scenario, not a wait for a result.
func (h *harness) hold(d time.Duration) {
	select {
	case <-time.After(d):
	case <-h.ctx.Done():
	}
}

// httpOK reports whether GET url answers 2xx.
func (h *harness) httpOK(url string) (bool, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return false, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return false, errors.New(resp.Status)
	}
	return true, nil
}
