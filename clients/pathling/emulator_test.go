package pathling_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/pathling-sync/pathling-sync/clients/auth"
	"github.com/pathling-sync/pathling-sync/clients/pathling"
	pathlingemu "github.com/pathling-sync/pathling-sync/emulators/pathling"
	"github.com/pathling-sync/pathling-sync/emulators/source"
	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// chain is the client talking to the Pathling emulator in pull mode, which
// really exports from the source emulator: the whole path of a sync, over
// loopback HTTP, without our service.
type chain struct {
	src    *source.Server
	srcURL string
	emu    *pathlingemu.Emulator
	client *pathling.Client
}

func newChain(t *testing.T, emuCfg pathlingemu.Config) *chain {
	t.Helper()
	src, err := source.New(source.Config{Seed: 3, Patients: 8, RetryAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	ss := httptest.NewServer(src)
	t.Cleanup(ss.Close)
	c := &chain{src: src, srcURL: ss.URL + "/fhir"}
	if emuCfg.AllowableExportURLs == nil {
		emuCfg.AllowableExportURLs = []string{c.srcURL}
		emuCfg.AllowInsecureURLs = true
		emuCfg.AllowInternalURLs = true
	}
	emuCfg.PollInterval = 10 * time.Millisecond
	c.emu, err = pathlingemu.New(emuCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.emu.Close)
	es := httptest.NewServer(c.emu)
	t.Cleanup(es.Close)
	c.client, err = pathling.New(es.URL + "/fhir")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run kicks off and polls to the end, as a sync does.
func (c *chain) run(t *testing.T, req pathling.ImportRequest) (string, pathling.JobStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := c.client.KickOff(ctx, req)
	if err != nil {
		t.Fatalf("kick-off: %v", err)
	}
	for {
		st, err := c.client.Status(ctx, url)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if st.State != pathling.StateRunning {
			return url, st
		}
		select {
		case <-ctx.Done():
			t.Fatal("job did not finish")
		case <-time.After(10 * time.Millisecond): // poll cadence
		}
	}
}

func (c *chain) assertSameStores(t *testing.T) {
	t.Helper()
	for _, typ := range []string{"Patient", "Encounter", "Observation", "Condition"} {
		want, got := c.src.Resources(typ), c.emu.Resources(typ)
		if len(want) == 0 || len(got) != len(want) {
			t.Fatalf("%s: Pathling holds %d, source %d", typ, len(got), len(want))
		}
		for id, w := range want {
			if !sameJSON(got[id], w) {
				t.Fatalf("%s/%s differs:\n pathling %s\n source   %s", typ, id, got[id], w)
			}
		}
	}
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// A full sync, then ten changes at the source, then an incremental sync with
// _since: Pathling's store equals the source's, type by type.
func TestChainFullThenIncremental(t *testing.T) {
	c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
	before := time.Now()
	_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: pathling.SaveModeMerge})
	if st.State != pathling.StateDone || st.Result == nil || len(st.Result.Outputs) == 0 {
		t.Fatalf("full sync: %+v", st)
	}
	if st.Result.TransactionTime.Before(before) {
		t.Fatalf("transactionTime %s is before the kick-off", st.Result.TransactionTime)
	}
	c.assertSameStores(t)

	since := time.Now().Add(-time.Second) // kick-off time minus an overlap
	changed := 0
	for _, typ := range []string{"Patient", "Observation", "Encounter", "Condition"} {
		ids := make([]string, 0)
		for id := range c.src.Resources(typ) {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids[:2] {
			raw, _ := c.src.Get(typ, id)
			var m map[string]any
			_ = json.Unmarshal(raw, &m)
			m["language"] = fmt.Sprintf("changed-%d", changed)
			b, _ := json.Marshal(m)
			if err := c.src.Put(b); err != nil {
				t.Fatal(err)
			}
			changed++
		}
	}
	for i := 0; changed < 10; i++ {
		if err := c.src.Put(json.RawMessage(fmt.Sprintf(`{"resourceType":"Patient","id":"added-%d"}`, i))); err != nil {
			t.Fatal(err)
		}
		changed++
	}
	_, st = c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: pathling.SaveModeMerge, Since: &since})
	if st.State != pathling.StateDone {
		t.Fatalf("incremental sync: %+v (%v)", st, st.Failure)
	}
	c.assertSameStores(t)
	exports := c.src.Exports()
	if len(exports) != 2 || exports[1].Since == "" {
		t.Fatalf("the incremental export did not carry _since: %+v", exports)
	}
}

// Each failure mode of the spec's §2, through the client, with its documented result.
func TestChainFailureModes(t *testing.T) {
	ctx := context.Background()
	t.Run("empty incremental export", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
		future := time.Now().Add(time.Hour)
		_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge", Since: &future})
		if st.State != pathling.StateFailed || !errors.Is(st.Failure, pathling.ErrEmptyExport) || st.Failure.Retryable || st.HTTPStatus != 400 {
			t.Fatalf("%+v %v", st, st.Failure)
		}
		if !strings.Contains(st.Failure.Message, "No files with extension .ndjson were downloaded") {
			t.Fatalf("message %q", st.Failure.Message)
		}
	})
	t.Run("source 5xx is retryable", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
		if err := c.src.InjectFault(source.Fault{Stage: source.StageKickOff, Status: 500}); err != nil {
			t.Fatal(err)
		}
		_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if st.State != pathling.StateFailed || !errors.Is(st.Failure, pathling.ErrImportFailed) || !st.Failure.Retryable {
			t.Fatalf("%+v %v", st, st.Failure)
		}
		if !strings.Contains(st.Failure.Message, "statusCode: 500") {
			t.Fatalf("message %q", st.Failure.Message)
		}
	})
	t.Run("download failure is retryable", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
		if err := c.src.InjectFault(source.Fault{Stage: source.StageDownload, Status: 503}); err != nil {
			t.Fatal(err)
		}
		_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if st.State != pathling.StateFailed || !st.Failure.Retryable {
			t.Fatalf("%+v %v", st, st.Failure)
		}
	})
	t.Run("failure is sticky until deleted", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
		future := time.Now().Add(time.Hour)
		req := pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge", Since: &future}
		url, st := c.run(t, req)
		if st.State != pathling.StateFailed {
			t.Fatal(st.State)
		}
		again, err := c.client.KickOff(ctx, req)
		if err != nil || again != url {
			t.Fatalf("identical request gave %q (%v), want the failed job %q", again, err, url)
		}
		if err := c.client.Delete(ctx, url); err != nil {
			t.Fatal(err)
		}
		if st, err := c.client.Status(ctx, url); err != nil || st.State != pathling.StateLost || !errors.Is(st.Failure, pathling.ErrJobLost) {
			t.Fatalf("after DELETE: %+v %v", st, err)
		}
		fresh, err := c.client.KickOff(ctx, req)
		if err != nil || fresh == url {
			t.Fatalf("after DELETE the identical request must make a new job: %q %v", fresh, err)
		}
	})
	t.Run("restart loses jobs", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModePull})
		url, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if st.State != pathling.StateDone {
			t.Fatal(st.State)
		}
		c.emu.Restart()
		if st, err := c.client.Status(ctx, url); err != nil || st.State != pathling.StateLost || st.HTTPStatus != 404 {
			t.Fatalf("after restart: %+v %v", st, err)
		}
		if err := c.client.Delete(ctx, url); err != nil {
			t.Fatalf("DELETE of a lost job is not an error: %v", err)
		}
	})
	t.Run("manifest origin mismatch is final", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModeScripted})
		if err := c.emu.SetDefaultScript(pathlingemu.Script{Outcome: pathlingemu.OutcomeFail,
			Failure: "Manifest download URL origin does not match export URL origin: http://a vs http://b"}); err != nil {
			t.Fatal(err)
		}
		_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if st.State != pathling.StateFailed || st.Failure.Retryable || !errors.Is(st.Failure, pathling.ErrImportFailed) {
			t.Fatalf("%+v %v", st, st.Failure)
		}
	})
	t.Run("another import in progress is retryable", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModeScripted})
		if err := c.emu.SetDefaultScript(pathlingemu.Script{Outcome: pathlingemu.OutcomeFail,
			Failure: "Another import operation is currently in progress"}); err != nil {
			t.Fatal(err)
		}
		_, st := c.run(t, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if st.State != pathling.StateFailed || !st.Failure.Retryable {
			t.Fatalf("%+v %v", st, st.Failure)
		}
	})
	t.Run("poll 503 and 429 are transport errors", func(t *testing.T) {
		c := newChain(t, pathlingemu.Config{Mode: pathlingemu.ModeScripted})
		if err := c.emu.SetDefaultScript(pathlingemu.Script{Polls: 5}); err != nil {
			t.Fatal(err)
		}
		url, err := c.client.KickOff(ctx, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range []int{503, 429} {
			if err := c.emu.Inject(pathlingemu.Injection{Target: pathlingemu.TargetPoll, Status: code, RetryAfter: "7"}); err != nil {
				t.Fatal(err)
			}
			_, err := c.client.Status(ctx, url)
			var pe *pathling.Error
			if !errors.As(err, &pe) || pe.Kind != pathling.KindUnavailable || !pe.Retryable || pe.RetryAfter != 7*time.Second {
				t.Fatalf("%d: %v", code, err)
			}
		}
	})
}

// The kick-off errors of the spec's §1 that a correct client can meet
// (it never sends a wrongly typed parameter): each is a final rejection with
// Pathling's message.
func TestChainKickOffRejections(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		cfg  pathlingemu.Config
		want string
	}{
		{"no allowlist", pathlingemu.Config{AllowableExportURLs: []string{}, AllowInsecureURLs: true, AllowInternalURLs: true},
			"No trusted export URLs are configured"},
		{"not in allowlist", pathlingemu.Config{AllowableExportURLs: []string{"http://elsewhere.test/fhir"}, AllowInsecureURLs: true, AllowInternalURLs: true},
			"exportUrl not in allowableExportUrls"},
		{"plain http", pathlingemu.Config{AllowableExportURLs: nil, AllowInternalURLs: true}, "must use https"},
		{"internal address", pathlingemu.Config{AllowableExportURLs: nil, AllowInsecureURLs: true}, "internal address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			var c *chain
			if cfg.AllowableExportURLs == nil {
				// Allow the source, but keep the one policy switch under test off.
				c = newChain(t, pathlingemu.Config{})
				cfg.AllowableExportURLs = []string{c.srcURL}
				emu, err := pathlingemu.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(emu.Close)
				es := httptest.NewServer(emu)
				t.Cleanup(es.Close)
				c.client, _ = pathling.New(es.URL + "/fhir")
			} else {
				c = newChain(t, cfg)
			}
			_, err := c.client.KickOff(ctx, pathling.ImportRequest{ExportURL: c.srcURL, SaveMode: "merge"})
			var pe *pathling.Error
			if !errors.As(err, &pe) || pe.Kind != pathling.KindRejected || pe.Retryable || pe.HTTPStatus != 400 || pe.Outcome == nil {
				t.Fatalf("got %v", err)
			}
			if !strings.Contains(pe.Message, tc.want) {
				t.Fatalf("message %q lacks %q", pe.Message, tc.want)
			}
		})
	}
}

// A token server's refusal reaches the SyncFailed message and the log in its
// own words (here the source emulator's SMART token endpoint refusing a write
// scope), never as a bare "cannot obtain an access token", and without the
// assertion.
func TestTokenRefusalReasonReachesThePort(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "sync-1", Algorithm: "ES384", Use: "sig"}
	tokenServer, err := source.New(source.Config{Seed: 1, Patients: 1, Auth: &source.AuthConfig{
		Clients: map[string]jose.JSONWebKeySet{"pathling-sync": {Keys: []jose.JSONWebKey{jwk.Public()}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokenServer.Close)
	ts := httptest.NewServer(tokenServer)
	t.Cleanup(ts.Close)
	priv, err := jwk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewSMARTBackend(auth.SMARTBackendConfig{
		ClientID: "pathling-sync", Scope: "user/*.write", FHIRBaseURL: ts.URL + "/fhir", PrivateJWK: priv,
	})
	if err != nil {
		t.Fatal(err)
	}
	emu, err := pathlingemu.New(pathlingemu.Config{AllowableExportURLs: []string{"http://source.test/fhir"}, AllowInsecureURLs: true, AllowInternalURLs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	es := httptest.NewServer(emu)
	t.Cleanup(es.Close)
	client, err := pathling.New(es.URL+"/fhir", pathling.WithTokenSource(tokens))
	if err != nil {
		t.Fatal(err)
	}

	_, err = pathling.NewPort(client).KickOff(context.Background(), handlers.ImportParams{ExportURL: "http://source.test/fhir", SaveMode: "merge"})
	var pe *handlers.PathlingError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %T %v, want *handlers.PathlingError", err, err)
	}
	const want = "token server refused: invalid_scope: request at least one system-level read scope, e.g. system/*.read"
	if pe.Reason != messages.ReasonUnauthorized || pe.Retryable || pe.Message != want {
		t.Errorf("got %s retryable=%v message %q, want unauthorized, final, %q", pe.Reason, pe.Retryable, pe.Message, want)
	}
	if strings.Contains(err.Error(), "eyJ") {
		t.Errorf("error leaks the client assertion: %v", err)
	}
}
