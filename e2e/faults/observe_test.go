package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/messages"
)

// event is one message of the stream.
type event struct {
	seq       uint64
	subject   string
	kind      string // requested, completed, failed
	target    string
	requestID string // for outcomes: the request they answer
	header    nats.Header
	data      []byte
}

func (e event) String() string {
	var body struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
		Empty   bool   `json:"empty"`
	}
	_ = json.Unmarshal(e.data, &body)
	switch e.kind {
	case messages.KindFailed:
		return fmt.Sprintf("#%d failed %s: %s", e.seq, body.Reason, body.Message)
	case messages.KindCompleted:
		return fmt.Sprintf("#%d completed (empty=%v)", e.seq, body.Empty)
	}
	return fmt.Sprintf("#%d %s", e.seq, e.kind)
}

// requesterSource is the ce-source of the requests the suite publishes.
const requesterSource = "faults"

// body is a merge sync from the source; fields override or add.
func (h *harness) body(fields map[string]any) map[string]any {
	b := map[string]any{"exportUrl": h.sourceBase + "/fhir", "saveMode": "merge"}
	for k, v := range fields {
		b[k] = v
	}
	return b
}

// request publishes a well-formed SyncRequested for the default target.
func (h *harness) request(id string, fields map[string]any) {
	h.t.Helper()
	raw, err := json.Marshal(h.body(fields))
	if err != nil {
		h.t.Fatal(err)
	}
	h.publish(id, messages.Subjects{}.Requested(target), raw, nil)
}

// publish publishes a SyncRequested with a CloudEvents envelope (ce-id = id, Nats-Msg-Id = id),
// then applies edit to the headers, and retries until JetStream acknowledges it (NATS may be
// restarting): a retry has the same Nats-Msg-Id, so it is stored once.
func (h *harness) publish(id, subject string, data []byte, edit func(nats.Header)) {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	messages.Envelope{ID: id, Source: requesterSource, Type: messages.TypeRequested, Subject: target,
		Time: time.Now()}.WriteTo(msg.Header)
	if edit != nil {
		edit(msg.Header)
	}
	h.mu.Lock()
	if !h.seen[id] {
		h.seen[id] = true
		h.requested = append(h.requested, id)
	}
	h.mu.Unlock()
	h.waitFor(30*time.Second, "publish "+id, func() (bool, error) {
		ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
		defer cancel()
		_, err := h.js.PublishMsg(ctx, msg)
		return err == nil, err
	})
}

// refresh reads the stream's messages not read yet.
func (h *harness) refresh() error {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, streamName)
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ; h.nextSeq <= info.State.LastSeq; h.nextSeq++ {
		m, err := s.GetMsg(ctx, h.nextSeq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get message %d: %w", h.nextSeq, err)
		}
		e := event{seq: m.Sequence, subject: m.Subject, header: m.Header, data: m.Data}
		e.kind, e.target, _ = messages.Subjects{}.TargetOf(m.Subject)
		if e.kind != messages.KindRequested {
			var body struct {
				RequestID string `json:"requestId"`
			}
			_ = json.Unmarshal(m.Data, &body)
			e.requestID = body.RequestID
			if e.requestID == "" {
				id := m.Header.Get(messages.HeaderID)
				e.requestID = strings.TrimSuffix(strings.TrimSuffix(id, "/completed"), "/failed")
			}
		}
		h.events = append(h.events, e)
	}
	return nil
}

// outcomes returns the stored outcome events per request id.
func (h *harness) outcomes() map[string][]event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string][]event{}
	for _, e := range h.events {
		if e.kind == messages.KindCompleted || e.kind == messages.KindFailed {
			out[e.requestID] = append(out[e.requestID], e)
		}
	}
	return out
}

// waitOutcome waits for the request's first outcome and returns it.
func (h *harness) waitOutcome(id string, timeout time.Duration) event {
	h.t.Helper()
	var got event
	h.waitFor(timeout, "outcome of "+id, func() (bool, error) {
		if err := h.refresh(); err != nil {
			return false, err
		}
		if evs := h.outcomes()[id]; len(evs) > 0 {
			got = evs[0]
			return true, nil
		}
		return false, nil
	})
	return got
}

// waitSettled waits until every request has an outcome and the consumer has nothing pending or
// unacknowledged, so no further outcome can come.
func (h *harness) waitSettled(timeout time.Duration) {
	h.t.Helper()
	h.waitFor(timeout, "every request answered and the consumer idle", h.settled)
}

func (h *harness) settled() (bool, error) {
	if err := h.refresh(); err != nil {
		return false, err
	}
	outs := h.outcomes()
	h.mu.Lock()
	for _, id := range h.requested {
		if len(outs[id]) == 0 {
			h.mu.Unlock()
			return false, fmt.Errorf("no outcome yet for %s", id)
		}
	}
	h.mu.Unlock()
	info, err := h.consumerInfo()
	if err != nil {
		return false, err
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		return false, fmt.Errorf("consumer: %d unacknowledged, %d pending", info.NumAckPending, info.NumPending)
	}
	return true, nil
}

func (h *harness) consumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
	defer cancel()
	c, err := h.js.Consumer(ctx, streamName, consumerName)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	return c.Info(ctx)
}

// runRecord is the part of a run record (Redis) the scenarios look at.
type runRecord struct {
	State     string `json:"state"`
	Driver    string `json:"driver"`
	StatusURL string `json:"statusUrl"`
}

func (h *harness) runRecord(id string) (runRecord, error) {
	ctx, cancel := context.WithTimeout(h.ctx, time.Second)
	defer cancel()
	raw, err := h.rdb.HGet(ctx, "pathling-sync:{"+target+"}:run:"+id, "run").Result()
	if err != nil {
		return runRecord{}, err
	}
	var r runRecord
	return r, json.Unmarshal([]byte(raw), &r)
}

// waitDriving waits until the request's Pathling job is running and polled (its run record has
// the status URL, and Pathling shows a running job), and returns the replica driving it.
func (h *harness) waitDriving(id string) *replica {
	h.t.Helper()
	var driver *replica
	h.waitFor(60*time.Second, id+" polling a running Pathling job", func() (bool, error) {
		r, err := h.runRecord(id)
		if err != nil || r.StatusURL == "" {
			return false, err
		}
		running, err := h.runningJobs()
		if err != nil || running == 0 {
			return false, err
		}
		for _, rep := range h.replicas {
			if rep.id == r.Driver {
				driver = rep
				return true, nil
			}
		}
		return false, fmt.Errorf("driver %q unknown", r.Driver)
	})
	return driver
}

func (h *harness) getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (h *harness) send(method, url string, body any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s %s", method, url, resp.Status, msg)
	}
	return nil
}

func (h *harness) mustSend(method, url string, body any) {
	h.t.Helper()
	if err := h.send(method, url, body); err != nil {
		h.t.Fatal(err)
	}
}

// runningJobs counts Pathling's running jobs.
func (h *harness) runningJobs() (int, error) {
	var jobs struct {
		Jobs []struct {
			State string `json:"state"`
		} `json:"jobs"`
	}
	if err := h.getJSON(h.pathlingBase+"/_emulator/jobs", &jobs); err != nil {
		return 0, err
	}
	n := 0
	for _, j := range jobs.Jobs {
		if j.State == "running" {
			n++
		}
	}
	return n, nil
}

// jobsCreated is the number of jobs Pathling created (new kick-offs, not cached answers).
func (h *harness) jobsCreated() (int, error) {
	var c struct {
		JobsCreated int `json:"jobsCreated"`
	}
	err := h.getJSON(h.pathlingBase+"/_emulator/counters", &c)
	return c.JobsCreated, err
}

func (h *harness) mustJobsCreated() int {
	h.t.Helper()
	n, err := h.jobsCreated()
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// latestExport is the transactionTime of the source's newest export: no watermark may be later
// (a later one would skip changes no export has delivered).
func (h *harness) latestExport() (time.Time, error) {
	var ex struct {
		Exports []struct {
			TransactionTime time.Time `json:"transactionTime"`
		} `json:"exports"`
	}
	if err := h.getJSON(h.sourceBase+"/_source/exports", &ex); err != nil {
		return time.Time{}, err
	}
	var latest time.Time
	for _, e := range ex.Exports {
		if e.TransactionTime.After(latest) {
			latest = e.TransactionTime
		}
	}
	return latest, nil
}

// touch updates n Observations at the source (each PUT takes a new version).
func (h *harness) touch(n int) {
	h.t.Helper()
	var list struct {
		Resources []struct {
			ID string `json:"id"`
		} `json:"resources"`
	}
	if err := h.getJSON(h.sourceBase+"/_source/resources/Observation", &list); err != nil {
		h.t.Fatal(err)
	}
	// Each call changes resources no earlier call changed, so a change a sync skipped is not
	// papered over by a later one.
	for i := 0; i < n && len(list.Resources) > 0; i++ {
		url := h.sourceBase + "/_source/resources/Observation/" + list.Resources[h.touched%len(list.Resources)].ID
		h.touched++
		var res map[string]any
		if err := h.getJSON(url, &res); err != nil {
			h.t.Fatal(err)
		}
		res["status"] = "amended"
		h.mustSend(http.MethodPut, url, res)
	}
}

// compareData compares every resource's version in Pathling with the source's.
func (h *harness) compareData() (bool, string, error) {
	var types struct {
		Types map[string]int `json:"types"`
	}
	if err := h.getJSON(h.sourceBase+"/_source/resources", &types); err != nil {
		return false, "", err
	}
	total, same := 0, 0
	for typ := range types.Types {
		var src struct {
			Resources []struct {
				ID        string `json:"id"`
				VersionID any    `json:"versionId"`
			} `json:"resources"`
		}
		if err := h.getJSON(h.sourceBase+"/_source/resources/"+typ, &src); err != nil {
			return false, "", err
		}
		var dst struct {
			Resources []struct {
				ID   string `json:"id"`
				Meta struct {
					VersionID any `json:"versionId"`
				} `json:"meta"`
			} `json:"resources"`
		}
		if err := h.getJSON(h.pathlingBase+"/_emulator/store/"+typ, &dst); err != nil && !strings.Contains(err.Error(), "404") {
			return false, "", err
		}
		have := map[string]string{}
		for _, r := range dst.Resources {
			have[r.ID] = fmt.Sprint(r.Meta.VersionID)
		}
		for _, r := range src.Resources {
			total++
			if v, ok := have[r.ID]; ok && v == fmt.Sprint(r.VersionID) {
				same++
			}
		}
	}
	return same == total, fmt.Sprintf("%d/%d", same, total), nil
}

// finalSync changes 3 resources at the source, runs a since:auto sync to its end and compares
// Pathling with the source: whatever happened before, the next incremental sync must leave
// Pathling equal to the source.
func (h *harness) finalSync() {
	h.t.Helper()
	h.touch(3)
	id := "final-" + randomHex(4)
	h.request(id, map[string]any{"since": "auto"})
	ev := h.waitOutcome(id, 120*time.Second)
	h.expect(ev.kind == messages.KindCompleted, "final since:auto sync: %s", ev)
	h.waitSettled(60 * time.Second)
	equal, note, err := h.compareData()
	if err != nil {
		h.t.Fatalf("compare data: %v", err)
	}
	h.dataChecked, h.dataEqual, h.dataNote = true, equal, note
}

// expect records a broken promise: the scenario fails, and the row says why.
func (h *harness) expect(ok bool, format string, args ...any) {
	h.t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	h.t.Errorf("%s", msg)
	h.row.notes = append(h.row.notes, msg)
}

// metric sums the samples of a metric on a replica's /metrics.
func (h *harness) metric(r *replica, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, nil
}

// sampler watches Pathling's running jobs and the target's watermarks every 100 ms.
type sampler struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	maxRunning int
	wm         map[string]int64
	moves      int
	backwards  []string
	pastData   []string
}

func (s *sampler) start(h *harness) {
	ctx, cancel := context.WithCancel(h.ctx)
	s.cancel, s.done, s.wm = cancel, make(chan struct{}), map[string]int64{}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample(ctx, h)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (s *sampler) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
}

func (s *sampler) sample(ctx context.Context, h *harness) {
	if n, err := h.runningJobs(); err == nil {
		s.mu.Lock()
		s.maxRunning = max(s.maxRunning, n)
		s.mu.Unlock()
	}
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	wm, err := h.rdb.HGetAll(rctx, "pathling-sync:{"+target+"}:wm").Result()
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, raw := range wm {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			continue
		}
		prev, had := s.wm[key]
		if had && v == prev {
			continue
		}
		s.wm[key] = v
		s.moves++
		if had && v < prev {
			s.backwards = append(s.backwards, fmt.Sprintf("%s: %d -> %d", key, prev, v))
		}
		latest, err := h.latestExport()
		if err == nil && v > latest.UnixMilli() {
			s.pastData = append(s.pastData, fmt.Sprintf("watermark %s is %s past the newest export (%s)",
				time.UnixMilli(v).UTC().Format(time.RFC3339Nano), time.UnixMilli(v).Sub(latest).Round(time.Millisecond), latest.Format(time.RFC3339Nano)))
		}
	}
}

// scanSecrets looks for every secret in every event, every process log and the extra outputs.
func (h *harness) scanSecrets() []string {
	var hits []string
	has := func(b []byte) bool {
		for _, s := range h.secrets {
			if s != "" && bytes.Contains(b, []byte(s)) {
				return true
			}
		}
		return false
	}
	h.mu.Lock()
	for _, e := range h.events {
		if e.header.Get(messages.HeaderSource) == requesterSource {
			continue // a request the suite published: it carries the secret on purpose
		}
		var hdr bytes.Buffer
		for k, vs := range e.header {
			fmt.Fprintf(&hdr, "%s: %s\n", k, strings.Join(vs, ","))
		}
		if has([]byte(e.subject)) || has(hdr.Bytes()) || has(e.data) {
			hits = append(hits, fmt.Sprintf("event #%d %s", e.seq, e.subject))
		}
	}
	files := append([]string(nil), h.extraScan...)
	h.mu.Unlock()
	logs, _ := filepath.Glob(filepath.Join(h.dir, "*.log"))
	for _, f := range append(logs, files...) {
		raw, err := os.ReadFile(f)
		if err == nil && has(raw) {
			hits = append(hits, filepath.Base(f))
		}
	}
	sort.Strings(hits)
	return hits
}
