package handlers_test

import (
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

// A run's log lines carry the delivery's attributes, then the run's, in
// that order, before the line's own: target, request_id, delivery, token,
// run_id.
func TestRunLogLinesCarryDeliveryAndRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	var out testenv.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	e.start(e.js, e.syncer(syncerOptions{log: log}), 0)
	e.request("t1", "logged-1", `{}`)
	c := e.outcomes.of(t, "logged-1", waitLong).completedBody(t)

	var kicked string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `"msg":"kicked off import"`) {
			kicked = line
		}
	}
	if kicked == "" {
		t.Fatalf("no kick-off line in\n%s", out.String())
	}
	want := regexp.MustCompile(`"msg":"kicked off import","target":"t1","request_id":"logged-1","delivery":1,"token":[0-9]+,"run_id":"` +
		regexp.QuoteMeta(c.RunID) + `","status_url":"[^"]+","attempt":1}$`)
	if !want.MatchString(kicked) {
		t.Errorf("kick-off line: %s", kicked)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(kicked), &m); err != nil {
		t.Errorf("kick-off line is not JSON: %v", err)
	}
}
