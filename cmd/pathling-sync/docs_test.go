package main

// The README's walk-through and the migration guide's steps, run as written:
// the command lines are read from the Markdown, so a change to the docs that
// breaks them breaks these tests. Only addresses are replaced: the docs'
// host names (nats, redis, pathling, source) by the servers the test runs,
// the cron line's /usr/local/bin/pathling-sync by the binary the test built.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/emulators/source"
	"github.com/pathling-sync/pathling-sync/internal/devenv"
	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

const repoRoot = "../.."

// installedBinary is where the docs' cron lines expect the binary: cron's
// PATH (/usr/bin:/bin) does not reach /usr/local/bin.
const installedBinary = "/usr/local/bin/pathling-sync"

// buildOnce builds bin/pathling-sync as `make run` does (so that its build
// step finds it up to date).
var buildOnce = sync.OnceValues(func() (string, error) {
	cmd := exec.Command("go", "build", "-o", "bin/", "./cmd/pathling-sync")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return filepath.Abs(filepath.Join(repoRoot, "bin", "pathling-sync"))
})

func builtBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// fencedLines returns the lines of the fenced code blocks of the given
// languages in a Markdown file, block by block, without their indentation.
func fencedLines(t *testing.T, path string, langs ...string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]string
	var cur []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !in && strings.HasPrefix(line, "```") && slices.Contains(langs, strings.TrimPrefix(line, "```")):
			in, cur = true, nil
		case in && line == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// cronCommand is the command of the crontab line after "# after" in a
// Markdown file's sh blocks: the line without its five schedule fields.
func cronCommand(t *testing.T, path string) string {
	t.Helper()
	for _, b := range fencedLines(t, path, "sh") {
		for i, l := range b {
			if l == "# after" || strings.HasPrefix(l, "# after ") {
				m := regexp.MustCompile(`^(\S+\s+){5}(.*)$`).FindStringSubmatch(b[i+1])
				if m == nil {
					t.Fatalf("%s: %q is not a crontab line", path, b[i+1])
				}
				return m[2]
			}
		}
	}
	t.Fatalf("%s: no crontab line after \"# after\"", path)
	return ""
}

// cronEnv is cron's environment for a job: nothing but these (the line sets
// the rest).
func cronEnv(home string) []string {
	return []string{"PATH=/usr/bin:/bin", "HOME=" + home, "SHELL=/bin/sh", "LOGNAME=root"}
}

// shellRun runs line with /bin/sh in dir, in its own process group (killed
// whole on ctx's end), and returns its output and exit code.
func shellRun(ctx context.Context, t *testing.T, dir string, env []string, line string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errOut testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", line, err)
	}
	return out.String(), errOut.String(), code
}

// shape reduces an output line to what the docs can promise: ids, times,
// durations, numbers and loopback addresses vary from run to run.
func shape(line string) string {
	for _, r := range shapeRules {
		line = r.re.ReplaceAllString(line, r.repl)
	}
	return strings.TrimSpace(line)
}

var shapeRules = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<id>"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`(https?|nats|redis)://127\.0\.0\.1:\d+`), "<addr>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|m|h)\b`), "<duration>"},
	{regexp.MustCompile(`\b\d+\b`), "<n>"},
	{regexp.MustCompile(`(<n> (file|poll))s\b`), "$1"},
	{regexp.MustCompile(`\s+`), " "},
}

// consoleSession is a ```console block: each "$ " command with the output
// the docs show for it.
type consoleCommand struct {
	line   string
	output []string
}

func consoleSession(t *testing.T, path string) []consoleCommand {
	t.Helper()
	var cmds []consoleCommand
	for _, b := range fencedLines(t, path, "console") {
		for _, l := range b {
			if cmd, ok := strings.CutPrefix(l, "$ "); ok {
				cmds = append(cmds, consoleCommand{line: cmd})
			} else if len(cmds) > 0 {
				cmds[len(cmds)-1].output = append(cmds[len(cmds)-1].output, l)
			}
		}
	}
	return cmds
}

// checkOutput reports each documented line whose shape is not among the
// actual output's ("..." elides, progress lines depend on timing).
func checkOutput(t *testing.T, what string, documented []string, actual string) {
	t.Helper()
	checked := 0
	defer func() {
		if checked == 0 && len(documented) > 0 {
			t.Errorf("%s: none of the documented lines was checked: %q", what, documented)
		}
	}()
	have := map[string]int{}
	for _, l := range strings.Split(actual, "\n") {
		have[shape(l)]++
	}
	for _, d := range documented {
		s := shape(d)
		if s == "" || s == "..." || strings.HasPrefix(s, "polling") || strings.HasPrefix(s, "waiting") {
			continue
		}
		if have[s] == 0 {
			t.Errorf("%s: the documented line\n  %s\nhas no match (shape %q) in the output:\n%s", what, d, s, actual)
			continue
		}
		have[s]--
		checked++
	}
}

// baseEnv is the test's environment without anything that would point the
// commands elsewhere than the docs say.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PATHLING_SYNC_") || strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "REDIS_") ||
			slices.Contains([]string{"PATHLING_URL", "SOURCE_EXPORT_URL", "SAVE_MODE", "TIMEOUT", "RESOURCE_TYPES", "SINCE"}, k) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// README: "make run", then in a second terminal the commands of the
// walk-through and the crontab line of "Migrating from the seed sync.sh";
// Ctrl-C (SIGINT to the foreground process group) then ends make without
// an error.
func TestREADMEVerbatim(t *testing.T) {
	bin := builtBinary(t)
	session := consoleSession(t, filepath.Join(repoRoot, "README.md"))
	if len(session) < 2 || session[0].line != "make run" {
		t.Fatalf("README's walk-through does not start with make run: %+v", session)
	}
	dataDir := t.TempDir()
	env := baseEnv(devenv.DataDirEnv + "=" + dataDir)

	makeRun := exec.Command("/bin/sh", "-c", session[0].line)
	makeRun.Dir, makeRun.Env = repoRoot, env
	makeRun.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var makeOut testenv.Buffer
	makeRun.Stdout, makeRun.Stderr = &makeOut, &makeOut
	if err := makeRun.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- makeRun.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-makeRun.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	// Ready: the addresses are written and /readyz answers 200.
	var addrs devenv.Addrs
	testenv.Eventually(t, 5*time.Minute, func() bool {
		a, ok := devReady(dataDir)
		addrs = a
		return ok
	}, "make run to be ready:\n%s", &makeOut)
	checkOutput(t, "make run", session[0].output, makeOut.String())

	// Minutes only with a cold build cache: the first "go run" compiles.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, c := range session[1:] {
		if strings.Contains(c.line, " events") {
			waitForEvents(t, addrs.NATSURL, 6) // the replica's chained sync included
		}
		out, errOut, code := shellRun(ctx, t, repoRoot, env, c.line)
		if code != 0 {
			t.Fatalf("$ %s: exit %d\nstdout:\n%s\nstderr:\n%s", c.line, code, out, errOut)
		}
		checkOutput(t, "$ "+c.line, c.output, out)
	}

	// The crontab line, in cron's environment, against the dev service.
	line := cronCommand(t, filepath.Join(repoRoot, "README.md"))
	home := t.TempDir()
	line = strings.NewReplacer(
		installedBinary, bin,
		"nats://nats:4222", addrs.NATSURL,
		"https://source/fhir", addrs.SourceURL,
	).Replace(line)
	out, errOut, code := shellRun(ctx, t, home, cronEnv(home), line)
	if code != 0 || !strings.Contains(out, "SyncCompleted") {
		t.Errorf("README's crontab line: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	} else if want := "progress unavailable: Redis not configured (REDIS_URL); waiting for the outcome on NATS only\n"; errOut != want {
		t.Errorf("README's crontab line: stderr\n%s\nwant\n%s", errOut, want)
	}

	// Ctrl-C.
	stopped = true
	if err := syscall.Kill(-makeRun.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		// make re-raises SIGINT once its job has ended: it dies of it, silently.
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT) {
			t.Errorf("make run after SIGINT: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-makeRun.Process.Pid, syscall.SIGKILL)
		<-exited
		t.Fatalf("make run did not stop within 30 s of SIGINT:\n%s", &makeOut)
	}
	if strings.Contains(makeOut.String(), "make: ***") {
		t.Errorf("make run reported an error on Ctrl-C:\n%s", &makeOut)
	}
}

// signalChildren sends sig to the child processes of pid.
func signalChildren(pid int, sig syscall.Signal) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(data)) {
		var child int
		if _, err := fmt.Sscan(f, &child); err != nil {
			return err
		}
		if err := syscall.Kill(child, sig); err != nil {
			return fmt.Errorf("signal %d: %w", child, err)
		}
	}
	return nil
}

// The dev binary on its own: Ctrl-C (SIGINT) is a clean stop, exit 0.
func TestDevExitsZeroOnSIGINT(t *testing.T) {
	bin := builtBinary(t)
	dataDir := t.TempDir()
	dev := exec.Command(bin, "dev", "--data-dir", dataDir, "--patients", "2")
	dev.Dir, dev.Env = dataDir, baseEnv()
	var out testenv.Buffer
	dev.Stdout, dev.Stderr = &out, &out
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	testenv.Eventually(t, time.Minute, func() bool { _, ok := devReady(dataDir); return ok }, "dev to be ready:\n%s", &out)
	if err := dev.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("dev after SIGINT: %v\n%s", err, &out)
		}
	case <-time.After(30 * time.Second):
		_ = dev.Process.Kill()
		<-exited
		t.Fatalf("dev did not stop within 30 s of SIGINT:\n%s", &out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, devenv.AddrsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev left its addresses file behind: %v", err)
	}
}

// waitForEvents waits until the stream holds at least n events.
func waitForEvents(t *testing.T, natsURL string, n uint64) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "PATHLING_SYNC")
		return err == nil && s.CachedInfo().State.Msgs >= n
	}, "%d events in the stream", n)
}

// The migration guide's steps 1 and 2: the service as step 1 runs it, then
// step 2's crontab line in cron's environment; then the same line with a
// Redis that does not answer.
func TestMigrationGuideVerbatim(t *testing.T) {
	bin := builtBinary(t)
	guide := filepath.Join(repoRoot, "docs", "migrating-from-sync-sh.md")

	// Step 1: the first sh block after "Migrating in three steps" that runs serve.
	var step1 string
	for _, b := range fencedLines(t, guide, "sh") {
		joined := strings.Join(b, "\n")
		if strings.Contains(joined, "pathling-sync serve") {
			step1 = joined
			break
		}
	}
	if step1 == "" {
		t.Fatal("the guide has no step running pathling-sync serve")
	}

	src, err := source.New(source.Config{Seed: 1, Patients: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	srcSrv := httptest.NewServer(src)
	t.Cleanup(srcSrv.Close)
	sourceBase := srcSrv.URL + "/fhir"
	emu, err := pathlingemu.New(pathlingemu.Config{
		AllowableExportURLs: []string{sourceBase}, AllowInsecureURLs: true, AllowInternalURLs: true,
		Mode: pathlingemu.ModePull,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	emuSrv := httptest.NewServer(emu)
	t.Cleanup(emuSrv.Close)
	ns := testenv.NATS(t)
	redisURL := testenv.Redis(t)
	addresses := strings.NewReplacer(
		installedBinary, bin,
		"http://pathling:8080/fhir", emuSrv.URL+"/fhir",
		"https://source/fhir", sourceBase,
		"nats://nats:4222", ns.ClientURL(),
		"redis://redis:6379/0", redisURL,
	)

	// The service, with the binary on PATH; the admin listener on loopback
	// (the default, :9464, is every interface) and polling as fast as the
	// emulator answers: settings the step leaves to the environment.
	serveDir := t.TempDir()
	serve := exec.Command("/bin/sh", "-c", addresses.Replace(step1))
	serve.Dir = serveDir
	serve.Env = []string{"PATH=" + filepath.Dir(bin) + ":/usr/bin:/bin", "HOME=" + serveDir,
		"PATHLING_SYNC_ADMIN_ADDR=127.0.0.1:0", "PATHLING_SYNC_TARGETS_DEFAULT_POLL_INITIAL=200ms", "PATHLING_SYNC_LOG_FORMAT=text"}
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var serveLog testenv.Buffer
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	t.Cleanup(func() {
		// SIGTERM to the service, the shell's child: the shell then exits
		// with the service's exit code.
		if err := signalChildren(serve.Process.Pid, syscall.SIGTERM); err != nil {
			t.Error(err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve after SIGTERM: %v\n%s", err, &serveLog)
			}
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
			<-served
			t.Errorf("serve did not stop within 20 s of SIGTERM")
		}
	})
	testenv.Eventually(t, time.Minute, func() bool { return strings.Contains(serveLog.String(), "pathling-sync serving") },
		"step 1's service to serve:\n%s", &serveLog)

	// Step 2, as cron runs it.
	line := addresses.Replace(cronCommand(t, guide))
	home := t.TempDir()
	logFile := filepath.Join(home, "pathling-sync.log")
	line = strings.ReplaceAll(line, "/var/log/pathling-sync.log", logFile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, code := shellRun(ctx, t, home, cronEnv(home), line)
	logged, _ := os.ReadFile(logFile)
	if code != 0 || !strings.Contains(string(logged), "SyncCompleted") {
		t.Fatalf("step 2: exit %d\nlog:\n%s\nstdout: %s\nstderr: %s\nservice:\n%s", code, logged, out, errOut, &serveLog)
	}
	if !strings.Contains(string(logged), "progress unavailable: Redis not configured (REDIS_URL); waiting for the outcome on NATS only\n") {
		t.Errorf("step 2's log does not say why there is no progress:\n%s", logged)
	}

	// The same with a Redis that does not answer: our one line, none of
	// go-redis' own.
	if err := os.Remove(logFile); err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("redis://127.0.0.1:%d/0", closedPort(t))
	_, _, code = shellRun(ctx, t, home, cronEnv(home), "REDIS_URL="+closed+" "+line)
	logged, _ = os.ReadFile(logFile)
	if code != 0 || !strings.Contains(string(logged), "SyncCompleted") {
		t.Fatalf("step 2 with Redis down: exit %d\nlog:\n%s", code, logged)
	}
	want := "progress unavailable: Redis at " + closed + " unreachable; waiting for the outcome on NATS only\n"
	if !strings.Contains(string(logged), want) || strings.Contains(string(logged), "failed to dial") || strings.Contains(string(logged), "connection pool") {
		t.Errorf("step 2 with Redis down: want the one line\n%s\nand no go-redis lines in:\n%s", want, logged)
	}
}
