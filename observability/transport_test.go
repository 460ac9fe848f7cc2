package observability

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pathling-sync/pathling-sync/clients/pathling"
)

// rotatingTokens hands out tok1, tok2, ... : a new one after each Invalidate.
type rotatingTokens struct {
	mu sync.Mutex
	n  int
}

func (r *rotatingTokens) Token(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.n = 1
	}
	return fmt.Sprintf("tok%d", r.n), nil
}

func (r *rotatingTokens) Invalidate(string) {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// The Pathling client through the instrumented transport: one HTTP client
// span per request, children of the caller's span, following the HTTP
// semantic conventions, the retry after a 401 marked with
// http.request.resend_count, the context sent on in traceparent, and every
// request counted by kind and status.
func TestTransportSpansAndMetrics(t *testing.T) {
	var mu sync.Mutex
	var traceparents []string
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("traceparent"))
		mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.Header.Get("Authorization") != "Bearer tok2":
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
		case r.Method == http.MethodPost:
			w.Header().Set("Content-Location", srvURL+"/fhir/$job?id=j1")
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"accepted"}]}`))
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("X-Progress", "40%")
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	srvURL = srv.URL

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"main"}})
	hc := &http.Client{Transport: NewTransport(nil, TransportConfig{
		Target: "main", TracerProvider: tp, Metrics: m, ResendCount: pathling.ResendCount,
		SpanAttributes: []attribute.KeyValue{attribute.String("pathling_sync.target", "main")},
	})}
	c, err := pathling.New(srv.URL+"/fhir", pathling.WithHTTPClient(hc), pathling.WithTokenSource(&rotatingTokens{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "kick-off")
	statusURL, err := c.KickOff(ctx, pathling.ImportRequest{ExportURL: "http://source.test/fhir", SaveMode: "merge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, statusURL); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, statusURL); err != nil {
		t.Fatal(err)
	}
	parent.End()

	var client []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			client = append(client, s)
		}
	}
	if len(client) != 4 {
		t.Fatalf("%d HTTP client spans, want 4 (401, resend, poll, delete)", len(client))
	}
	wantNames := []string{"POST /fhir/$import-pnp", "POST /fhir/$import-pnp", "GET /fhir/$job", "DELETE /fhir/$job"}
	wantStatus := []int64{401, 202, 202, 204}
	for i, s := range client {
		a := attrs(s)
		if s.Name() != wantNames[i] {
			t.Errorf("span %d named %q, want %q", i, s.Name(), wantNames[i])
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %s is not a child of the caller's span", s.Name())
		}
		if got := a["http.response.status_code"].AsInt64(); got != wantStatus[i] {
			t.Errorf("span %d status %d, want %d", i, got, wantStatus[i])
		}
		if a["http.request.method"].AsString() != strings.Fields(wantNames[i])[0] ||
			!strings.HasPrefix(a["url.full"].AsString(), srv.URL+"/fhir/$") ||
			a["server.address"].AsString() != "127.0.0.1" || a["server.port"].AsInt64() == 0 ||
			a["url.template"].AsString() != strings.Fields(wantNames[i])[1] || a["pathling_sync.target"].AsString() != "main" {
			t.Errorf("span %d attributes: %v", i, s.Attributes())
		}
		resend, marked := a["http.request.resend_count"]
		if i == 1 {
			if !marked || resend.AsInt64() != 1 {
				t.Errorf("the retry after a 401 lacks http.request.resend_count=1: %v", s.Attributes())
			}
		} else if marked {
			t.Errorf("span %d (%s) marked as a resend", i, s.Name())
		}
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), "tok1") || strings.Contains(kv.Value.String(), "tok2") {
				t.Errorf("a token is in span attribute %s", kv.Key)
			}
		}
		// The server saw this span's context.
		mu.Lock()
		tp := traceparents[i]
		mu.Unlock()
		if want := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID()); tp != want {
			t.Errorf("request %d traceparent %q, want %q", i, tp, want)
		}
	}
	if a := attrs(client[0]); a["error.type"].AsString() != "401" {
		t.Errorf("401 span error.type %q", a["error.type"].AsString())
	}

	fams, _ := scrape(t, tel.MetricsHandler())
	for _, w := range []struct {
		kind, code string
		n          float64
	}{{KindKickOff, "401", 1}, {KindKickOff, "202", 1}, {KindPoll, "202", 1}, {KindDelete, "204", 1}} {
		labels := map[string]string{"target": "main", "kind": w.kind, "status_code": w.code}
		if got := mustSample(t, fams, "pathling_sync_pathling_requests_total", labels); got != w.n {
			t.Errorf("requests%v = %v, want %v", labels, got, w.n)
		}
	}
	if got := mustSample(t, fams, "pathling_sync_pathling_request_duration_seconds", map[string]string{"target": "main", "kind": KindKickOff}); got != 2 {
		t.Errorf("kick-off duration samples %v, want 2", got)
	}
}

func TestTransportCountsNetworkErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"main"}})
	hc := &http.Client{Transport: NewTransport(nil, TransportConfig{Target: "main", Metrics: m})}
	resp, err := hc.Get(url + "/fhir/$job?id=x")
	if err == nil {
		resp.Body.Close()
		t.Fatal("request to a closed server succeeded")
	}
	fams, _ := scrape(t, tel.MetricsHandler())
	mustSample(t, fams, "pathling_sync_pathling_requests_total", map[string]string{"target": "main", "kind": KindPoll, "status_code": "error"})
}

func TestRequestKind(t *testing.T) {
	for _, c := range []struct{ method, url, want string }{
		{"POST", "http://p/fhir/$import-pnp", KindKickOff},
		{"GET", "http://p/fhir/$job?id=1", KindPoll},
		{"DELETE", "http://p/fhir/$job?id=1", KindDelete},
		{"GET", "http://p/fhir/.well-known/smart-configuration", KindDiscovery},
		{"POST", "http://idp/realms/x/protocol/openid-connect/token", KindToken},
		{"GET", "http://p/fhir/metadata", KindOther},
	} {
		r := httptest.NewRequest(c.method, c.url, nil)
		if got := RequestKind(r); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.method, c.url, got, c.want)
		}
	}
}

// With spans that are never recorded (no exporter), each request still gets
// a client span of its own whose context goes out in traceparent, and is
// counted; the caller's request is left as it was.
func TestTransportUnrecordedSpans(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("traceparent"))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	tel, m := newTestMetrics(t, MetricsConfig{Targets: []string{"main"}})
	hc := &http.Client{Transport: NewTransport(nil, TransportConfig{Target: "main", Metrics: m, TracerProvider: tel.TracerProvider()})}
	ctx, caller := tel.TracerProvider().Tracer("t").Start(context.Background(), "caller")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/fhir/$job?id=1", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := caller.SpanContext()
	if len(got) != 1 || !strings.HasPrefix(got[0], "00-"+sc.TraceID().String()+"-") || strings.Contains(got[0], sc.SpanID().String()) ||
		!strings.HasSuffix(got[0], "-01") {
		t.Errorf("traceparent %q: want the caller's trace %s, a span of its own, sampled", got, sc.TraceID())
	}
	if req.Header.Get("traceparent") != "" {
		t.Error("the caller's request was changed")
	}
	fams, _ := scrape(t, tel.MetricsHandler())
	mustSample(t, fams, "pathling_sync_pathling_requests_total", map[string]string{"target": "main", "kind": KindPoll, "status_code": "202"})
}

// The header an unrecorded request is sent with is the caller's plus the
// trace context, exactly as a Request.Clone with the propagator's
// HeaderCarrier makes it (a stale traceparent replaced, several values and
// a nil value kept, tracestate when there is one), and the caller's header
// is left as it was.
func TestTraceHeaderAsCloneAndHeaderCarrier(t *testing.T) {
	ts, err := trace.ParseTraceState("k=v,a=b")
	if err != nil {
		t.Fatal(err)
	}
	valid := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	for _, sc := range []trace.SpanContext{valid, valid.WithTraceState(ts), valid.WithTraceFlags(0), {}} {
		for _, h := range []http.Header{
			{},
			{"Accept": {"application/fhir+json"}, "Authorization": {"Bearer x"}},
			{"Traceparent": {"00-stale-stale-00", "second"}, "Tracestate": {"old=1"}, "X-Many": {"1", "2", "3"}},
			{"User-Agent": nil, "traceparent": {"lowercase, not canonical"}},
		} {
			before := h.Clone()
			ctx := trace.ContextWithSpanContext(context.Background(), sc)
			want := h.Clone()
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(want))
			got := withTraceParentRoom(h, sc.IsValid())
			propagation.TraceContext{}.Inject(ctx, traceHeader(got))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("span context %v, header %v: sent %v, want %v", sc, h, got, want)
			}
			if !reflect.DeepEqual(h, before) {
				t.Errorf("span context %v: the caller's header changed: %v, was %v", sc, h, before)
			}
		}
	}
}
