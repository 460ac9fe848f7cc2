package pathling

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	seedGrep     = `grep -i "Content-Location"`
	anchoredGrep = `grep -i '^Content-Location:'`
)

// TestSeedSyncScript runs the seed's sync.sh, verbatim, against the emulator: it fails because
// its grep also matches the compact kick-off body; with the grep anchored it works.
func TestSeedSyncScript(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	script, err := os.ReadFile(filepath.Join("testdata", "sync.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(script), "#!/bin/bash\n") || strings.Count(string(script), seedGrep) != 1 {
		t.Fatal("testdata/sync.sh is not the verbatim seed script")
	}

	// A scripted job finishes at its first poll, so the script never reaches its 5 s sleep.
	fs := newFakeSource(t)
	h := scriptedHarness(t, Config{AllowableExportURLs: []string{fs.srv.URL}})
	run := func(path string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", path)
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			"HOME=" + t.TempDir(),
			"LANG=C",
			"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
			"PATHLING_URL=" + h.base(),
			"SOURCE_EXPORT_URL=" + fs.base(),
		}
		out, err := cmd.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("run %s: %v", path, err)
		}
		return string(out), code
	}

	verbatim := filepath.Join(t.TempDir(), "sync.sh")
	if err := os.WriteFile(verbatim, script, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := run(verbatim)
	t.Logf("verbatim seed sync.sh exited %d, printed:\n%s", code, out)
	if code != 3 {
		t.Fatalf("verbatim script: exit %d, want 3 (curl: malformed URL)", code)
	}
	if !strings.Contains(out, "\naccepted\n") {
		t.Fatalf("verbatim script: want the stray line 'accepted' from the body in its output")
	}
	if strings.Contains(out, "Import complete") {
		t.Fatal("verbatim script must not complete")
	}

	fixed := filepath.Join(t.TempDir(), "sync-anchored.sh")
	if err := os.WriteFile(fixed, []byte(strings.Replace(string(script), seedGrep, anchoredGrep, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code = run(fixed)
	t.Logf("sync.sh with the anchored grep exited %d, printed:\n%s", code, out)
	if code != 0 || !strings.Contains(out, "Import complete") {
		t.Fatalf("anchored script: exit %d, want 0 and 'Import complete'", code)
	}
	if !strings.Contains(out, `{"resourceType":"Parameters","parameter":[{"name":"transactionTime"`) {
		t.Fatal("anchored script: want the Parameters result printed")
	}

	// Both runs sent the identical request (the first never polled its job): same job.
	if c := h.emu.Counters(); c.Accepted != 2 || c.JobsCreated != 1 {
		t.Fatalf("counters %+v", c)
	}
}
