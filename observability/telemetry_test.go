package observability

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/pathling-sync/pathling-sync/internal/testenv"
)

func TestSetupRejectsBadEnv(t *testing.T) {
	for _, env := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_METRICS_EXPORTER": "console"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_TRACES_SAMPLER": "jaeger_remote"},
		{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
		{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment"},
	} {
		_, err := Setup(context.Background(), Options{Getenv: envFrom(env)})
		if !errors.Is(err, ErrInvalidEnv) {
			t.Errorf("env %v: error %v, want ErrInvalidEnv", env, err)
		}
	}
}

func TestTraceExporterDefault(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want []string
	}{
		{nil, nil},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []string{"otlp"}},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, []string{"otlp"}},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, nil},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp, Console"}, []string{"otlp", "console"}},
	}
	for _, c := range cases {
		got, err := traceExporters(envFrom(c.env))
		if err != nil || strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("env %v: %v %v, want %v", c.env, got, err, c.want)
		}
	}
	p, _ := otlpProtocol(envFrom(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}), "TRACES")
	if p != protocolHTTP {
		t.Errorf("the per-signal protocol must win: got %s", p)
	}
}

func TestSampler(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		sampled bool
	}{
		{nil, true},
		{map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, false},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, false},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}, true},
	} {
		tel, err := Setup(context.Background(), Options{Getenv: envFrom(c.env)})
		if err != nil {
			t.Fatal(err)
		}
		_, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "s")
		if got := span.SpanContext().IsSampled(); got != c.sampled {
			t.Errorf("env %v: sampled %v, want %v", c.env, got, c.sampled)
		}
		span.End()
		_ = tel.Shutdown(context.Background())
	}
}

func TestSDKDisabledStillPassesContextOn(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Getenv: envFrom(map[string]string{"OTEL_SDK_DISABLED": "true"})})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	_, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "s")
	if span.IsRecording() {
		t.Fatal("OTEL_SDK_DISABLED=true still records spans")
	}
	fams, _ := scrape(t, tel.MetricsHandler())
	if _, ok := fams["target_info"]; !ok {
		t.Fatal("/metrics must be served even with the SDK's tracing disabled")
	}
}

func TestResourceFromEnv(t *testing.T) {
	tel, err := Setup(context.Background(), Options{ServiceVersion: "1.2.3", InstanceID: "replica-1", Getenv: envFrom(map[string]string{
		"OTEL_SERVICE_NAME":        "sync-prod",
		"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod%20eu,service.name=ignored",
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	fams, _ := scrape(t, tel.MetricsHandler())
	mustSample(t, fams, "target_info", map[string]string{
		"service_name": "sync-prod", "service_version": "1.2.3", "service_instance_id": "replica-1",
		"deployment_environment_name": "prod eu",
	})
}

func TestConsoleExporterFlushesOnShutdown(t *testing.T) {
	var out testenv.Buffer
	tel, err := Setup(context.Background(), Options{Stdout: &out, Getenv: envFrom(map[string]string{"OTEL_TRACES_EXPORTER": "console"})})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "console-span")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"Name":"console-span"`) {
		t.Fatalf("console exporter wrote:\n%s", out.String())
	}
}

// An OTLP/HTTP collector receives the spans when Shutdown flushes them.
func TestOTLPHTTPExporter(t *testing.T) {
	var mu sync.Mutex
	var got []*coltracepb.ExportTraceServiceRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("collector got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			t.Errorf("collector: %v", err)
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	tel, err := Setup(context.Background(), Options{ServiceName: "otlp-http-test", Getenv: envFrom(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, // unset exporter: otlp because an endpoint is set
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
	})})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "over-http")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	assertExported(t, got, "otlp-http-test", "over-http")
}

type traceCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu  sync.Mutex
	got []*coltracepb.ExportTraceServiceRequest
}

func (c *traceCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	c.got = append(c.got, req)
	c.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// An OTLP/gRPC collector receives the spans when Shutdown flushes them.
func TestOTLPGRPCExporter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &traceCollector{}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, col)
	go gs.Serve(ln)
	defer gs.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+ln.Addr().String())
	tel, err := Setup(context.Background(), Options{ServiceName: "otlp-grpc-test", Getenv: envFrom(map[string]string{
		"OTEL_TRACES_EXPORTER":        "otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
	})})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "over-grpc")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	assertExported(t, col.got, "otlp-grpc-test", "over-grpc")
}

func assertExported(t *testing.T, reqs []*coltracepb.ExportTraceServiceRequest, service, span string) {
	t.Helper()
	for _, req := range reqs {
		for _, rs := range req.GetResourceSpans() {
			name := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					name = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					if s.GetName() == span && name == service {
						return
					}
				}
			}
		}
	}
	t.Fatalf("collector did not receive span %q of service %q (%d requests)", span, service, len(reqs))
}

// With no exporter, spans still get ids of their own (for logs and the
// traceparent of published events) but record nothing.
func TestNoExporterSpansCarryIDsWithoutRecording(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	tr := tel.TracerProvider().Tracer("t")
	ctx, root := tr.Start(context.Background(), "root")
	_, child := tr.Start(ctx, "child")
	rsc, csc := root.SpanContext(), child.SpanContext()
	if root.IsRecording() || child.IsRecording() {
		t.Error("spans are recorded with no exporter to read them")
	}
	if !rsc.IsValid() || !csc.IsValid() || !rsc.IsSampled() || !csc.IsSampled() {
		t.Errorf("span contexts %v, %v: want valid and sampled", rsc, csc)
	}
	if csc.TraceID() != rsc.TraceID() || csc.SpanID() == rsc.SpanID() {
		t.Errorf("child %v of %v: want the parent's trace id and a span id of its own", csc, rsc)
	}
	_, other := tr.Start(context.Background(), "other")
	if other.SpanContext().TraceID() == rsc.TraceID() {
		t.Error("two roots share a trace id")
	}
}

func TestExemplarsOnlyWhereTheyCanBeRead(t *testing.T) {
	for _, c := range []struct {
		spans, metrics []string
		env            map[string]string
		want           bool
	}{
		{nil, nil, nil, false},
		{[]string{"otlp"}, nil, nil, false}, // /metrics (text format) shows no exemplars
		{nil, []string{"otlp"}, nil, false}, // they would name traces nobody keeps
		{[]string{"otlp"}, []string{"otlp"}, nil, true},
		{nil, nil, map[string]string{"OTEL_METRICS_EXEMPLAR_FILTER": "always_on"}, true},
	} {
		if got := exemplarsUseful(c.spans, c.metrics, envFrom(c.env)); got != c.want {
			t.Errorf("spans %v, metrics %v, env %v: %v, want %v", c.spans, c.metrics, c.env, got, c.want)
		}
	}
}

// With no exporter, the sampler sees the parent a span is started under:
// the remote parent's decision is kept (parentbased), and a new root
// ignores the parent in its context (a trace of its own, sampled by the
// root sampler). Each decision as the SDK tracer makes it.
func TestNoExporterSamplerSeesTheParent(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer sdk.Shutdown(context.Background())
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, Remote: true, // not sampled
		TraceState: func() trace.TraceState { ts, _ := trace.ParseTraceState("k=v"); return ts }(),
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	for _, tp := range []trace.TracerProvider{tel.TracerProvider(), sdk} {
		_, child := tp.Tracer("t").Start(ctx, "child")
		csc := child.SpanContext()
		if csc.TraceID() != remote.TraceID() || csc.IsSampled() || csc.TraceState().String() != "k=v" {
			t.Errorf("%T: child %v of unsampled %v: want its trace, unsampled, its trace state", tp, csc, remote)
		}
		_, root := tp.Tracer("t").Start(ctx, "root", trace.WithAttributes(attribute.String("k", "v")), trace.WithNewRoot(),
			trace.WithSpanKind(trace.SpanKindClient))
		rsc := root.SpanContext()
		if rsc.TraceID() == remote.TraceID() || !rsc.IsSampled() || rsc.TraceState().Len() != 0 {
			t.Errorf("%T: new root %v under %v: want a trace of its own, sampled, no trace state", tp, rsc, remote)
		}
		_, plain := tp.Tracer("t").Start(context.Background(), "plain", trace.WithNewRoot())
		if !plain.SpanContext().IsValid() || !plain.SpanContext().IsSampled() {
			t.Errorf("%T: new root without a parent: %v", tp, plain.SpanContext())
		}
	}
}

// recordingSampler keeps the parameters it was asked about.
type recordingSampler struct{ got []sdktrace.SamplingParameters }

func (s *recordingSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	s.got = append(s.got, p)
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
}

func (s *recordingSampler) Description() string { return "recording" }

// A sampler that may read more than the parent gets a span's name, kind,
// attributes and links.
func TestIDTracerGivesTheSamplerTheSpan(t *testing.T) {
	smp := &recordingSampler{}
	tr := newIDTracerProvider(smp, false).Tracer("t")
	link := trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}})}
	_, span := tr.Start(context.Background(), "s", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("k", "v")), trace.WithLinks(link))
	if !span.SpanContext().IsSampled() || len(smp.got) != 1 {
		t.Fatalf("span %v, sampler asked %d times", span.SpanContext(), len(smp.got))
	}
	p := smp.got[0]
	if p.Name != "s" || p.Kind != trace.SpanKindProducer || len(p.Attributes) != 1 || p.Attributes[0] != attribute.String("k", "v") ||
		len(p.Links) != 1 || !p.Links[0].SpanContext.Equal(link.SpanContext) || p.TraceID != span.SpanContext().TraceID() {
		t.Errorf("sampler got %+v", p)
	}
}
