#!/usr/bin/env bash
# End-to-end check of the traces of one sync against a real collector (`make e2e-tracing`; not
# part of CI: the first run builds Jaeger, ~10 minutes):
#   1. builds Jaeger v2 from the Go module proxy in a scratch module (cached under
#      ~/.cache/pathling-sync/jaeger), starts it on 127.0.0.1 with in-memory storage;
#   2. runs `pathling-sync dev` exporting its spans to Jaeger over OTLP/gRPC;
#   3. requests a sync with `pathling-sync request --wait`;
#   4. asks Jaeger's HTTP API for the sync's trace (its id from the service's log) and asserts
#      that the one trace holds the consumer span, the lock, the kick-off and its HTTP span, the
#      polls and theirs, the watermark commit and the outcome's publish span, correctly nested.
# Prints the trace id and the span tree. Needs Go and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

JAEGER_VERSION=v1.76.0
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pathling-sync/jaeger"
JAEGER_BIN="$CACHE_DIR/jaeger-$JAEGER_VERSION"

command -v curl >/dev/null || { echo "e2e-tracing: curl is required" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "e2e-tracing: FAIL: $*" >&2
  for f in jaeger.log dev.log; do
    [ -s "$work/$f" ] && { echo "--- $f (last 40 lines)" >&2; tail -n 40 "$work/$f" >&2; }
  done
  exit 1
}

# --- 1. Jaeger v2, built once from the module proxy.
if [ ! -x "$JAEGER_BIN" ]; then
  echo "building Jaeger $JAEGER_VERSION from the Go module proxy (once; about 10 minutes)"
  scratch="$work/jaeger-build"
  mkdir -p "$scratch" "$CACHE_DIR"
  (
    cd "$scratch"
    export GOFLAGS=-mod=mod
    go mod init jaeger-build >/dev/null 2>&1
    # sarama was renamed to IBM/sarama; an old dependency still asks for the Shopify path.
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    go build -o "$JAEGER_BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
  )
  mv "$JAEGER_BIN.tmp" "$JAEGER_BIN"
fi

# Free loopback ports (a connect that fails means nobody listens).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=24317
take_port() { # take_port VAR: the next free port from next_port on
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  printf -v "$1" '%s' "$next_port"
  next_port=$((next_port + 1))
}
take_port otlp_grpc
take_port otlp_http
take_port query_http
take_port query_grpc

cat >"$work/jaeger.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$query_http
    grpc:
      endpoint: 127.0.0.1:$query_grpc
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$otlp_grpc
      http:
        endpoint: 127.0.0.1:$otlp_http
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
"$JAEGER_BIN" --config "$work/jaeger.yaml" >"$work/jaeger.log" 2>&1 &
pids+=($!)
query="http://127.0.0.1:$query_http"
for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "$query/api/services" 2>/dev/null && break
  sleep 0.5
done
curl -fsS -o /dev/null "$query/api/services" || fail "Jaeger did not start"
echo "Jaeger $JAEGER_VERSION: OTLP gRPC 127.0.0.1:$otlp_grpc, query $query"

# --- 2. pathling-sync dev, exporting to Jaeger.
go build -o "$work/pathling-sync" ./cmd/pathling-sync
export PATHLING_SYNC_DATA_DIR="$work/dev"
OTEL_TRACES_EXPORTER=otlp \
OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_grpc" \
OTEL_SERVICE_NAME=pathling-sync \
OTEL_BSP_SCHEDULE_DELAY=200 \
  "$work/pathling-sync" dev --data-dir "$work/dev" --patients 5 --log-level debug >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!
pids+=("$dev_pid")
for _ in $(seq 1 120); do
  [ -s "$work/dev/addrs.json" ] && break
  sleep 0.5
done
[ -s "$work/dev/addrs.json" ] || fail "pathling-sync dev did not start"

# --- 3. One sync.
request_id="e2e-$(date +%s)-$$"
"$work/pathling-sync" request --wait --id "$request_id" >"$work/request.out" 2>&1 ||
  { cat "$work/request.out" >&2; fail "request --wait did not complete"; }
head -n 1 "$work/request.out"

# The trace id, from the service's log line of the kick-off.
trace_id=$(grep -F "request_id=$request_id" "$work/dev.log" | grep -F 'msg="kicked off import"' |
  sed -n 's/.*trace_id=\([0-9a-f]\{32\}\).*/\1/p' | head -n 1)
[ -n "$trace_id" ] || fail "no trace_id in the log of request $request_id"

# Let syncs chained to this one finish (none in flight, per /metrics), then stop dev: its
# shutdown flushes the remaining spans.
admin=$(sed -n 's/.*"adminAddr": *"\([^"]*\)".*/\1/p' "$work/dev/addrs.json")
for _ in $(seq 1 60); do
  curl -fsS "http://$admin/metrics" 2>/dev/null | grep '^pathling_sync_syncs_in_flight' | grep -qv ' 0$' || break
  sleep 0.5
done
echo "metrics of the run (http://$admin/metrics):"
curl -fsS "http://$admin/metrics" | grep -E '^pathling_sync_(syncs_total\{outcome="completed"|pathling_requests_total|syncs_in_flight|last_success|watermark_age)' | sed 's/^/  /'
# Stop dev: its shutdown flushes the remaining spans.
kill -TERM "$dev_pid"
wait "$dev_pid" 2>/dev/null || true

# --- 4. The trace, from Jaeger's HTTP API.
cat >"$work/check.go" <<'EOF'
// check reads a Jaeger /api/traces/<id> answer and asserts the shape of one sync's trace.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64 `json:"startTime"`
	Duration  int64 `json:"duration"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

func (s span) tag(k string) string {
	for _, t := range s.Tags {
		if t.Key == k {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s span) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

const consumer = "process pathling.sync.requested.default"

// want maps each span of the requested sync to its parent's name and its kind.
var want = map[string][2]string{
	consumer:                 {"", "consumer"},
	"lock":                   {consumer, "internal"},
	"kick-off":               {consumer, "internal"},
	"POST /fhir/$import-pnp": {"kick-off", "client"},
	"poll":                   {consumer, "internal"},
	"GET /fhir/$job":         {"poll", "client"},
	"watermark commit":       {consumer, "internal"},
	"DELETE /fhir/$job":      {consumer, "client"},
	"publish pathling.sync.completed.default": {consumer, "producer"},
}

func main() {
	traceID, file := os.Args[1], os.Args[2]
	data, err := os.ReadFile(file)
	if err != nil {
		panic(err)
	}
	var answer struct {
		Data []struct {
			Spans []span `json:"spans"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || len(answer.Data) != 1 {
		fmt.Printf("not one trace (%v): %.500s\n", err, data)
		os.Exit(1)
	}
	spans := answer.Data[0].Spans
	sort.Slice(spans, func(i, j int) bool { return spans[i].StartTime < spans[j].StartTime })
	byID := map[string]span{}
	children := map[string][]span{}
	var problems []string
	var root span
	for _, s := range spans {
		byID[s.SpanID] = s
		children[s.parent()] = append(children[s.parent()], s)
		if s.TraceID != traceID {
			problems = append(problems, fmt.Sprintf("span %q has trace id %s", s.OperationName, s.TraceID))
		}
		if s.OperationName == consumer {
			root = s
		}
	}
	// The checks apply to the requested sync: the consumer span's subtree. (A sync of another
	// target chained to its outcome continues the same trace under a "chain <rule>" producer
	// span and a consumer span of its own.)
	count := map[string]int{}
	var walk func(s span)
	walk = func(s span) {
		count[s.OperationName]++
		w, known := want[s.OperationName]
		kind := s.tag("span.kind")
		if kind == "" {
			kind = "internal"
		}
		switch {
		case !known:
			problems = append(problems, fmt.Sprintf("unexpected span %q", s.OperationName))
		case w[0] != "" && byID[s.parent()].OperationName != w[0]:
			problems = append(problems, fmt.Sprintf("span %q has parent %q, want %q", s.OperationName, byID[s.parent()].OperationName, w[0]))
		case kind != w[1]:
			problems = append(problems, fmt.Sprintf("span %q has kind %q, want %q", s.OperationName, kind, w[1]))
		}
		for _, c := range children[s.SpanID] {
			// A chained sync (a "chain <rule>" span, then its own consumer span) is another
			// sync in the same trace: not part of this one's checks.
			if !strings.HasPrefix(c.OperationName, "process ") && !strings.HasPrefix(c.OperationName, "chain ") {
				walk(c)
			}
		}
	}
	if root.SpanID == "" {
		problems = append(problems, "no span "+consumer)
	} else {
		walk(root)
	}
	for name := range want {
		if count[name] == 0 {
			problems = append(problems, "no span "+name)
		}
	}
	if count["poll"] != count["GET /fhir/$job"] {
		problems = append(problems, fmt.Sprintf("%d poll spans but %d HTTP poll spans", count["poll"], count["GET /fhir/$job"]))
	}

	fmt.Printf("trace %s: %d spans\n", traceID, len(spans))
	var print func(s span, depth int)
	print = func(s span, depth int) {
		extra := ""
		for _, k := range []string{"messaging.destination.name", "messaging.message.id", "http.response.status_code",
			"http.request.resend_count", "pathling_sync.poll", "pathling_sync.job.state"} {
			if v := s.tag(k); v != "" {
				extra += " " + k + "=" + v
			}
		}
		fmt.Printf("  %s%-*s %-8s %9.1fms%s\n", strings.Repeat("  ", depth), 46-2*depth, s.OperationName, s.tag("span.kind"), float64(s.Duration)/1000, extra)
		for _, c := range children[s.SpanID] {
			print(c, depth+1)
		}
	}
	for _, s := range spans {
		if _, ok := byID[s.parent()]; !ok {
			print(s, 0)
		}
	}
	if len(problems) > 0 {
		fmt.Println("PROBLEMS:")
		for _, p := range problems {
			fmt.Println("  " + p)
		}
		os.Exit(1)
	}
	fmt.Println("OK: one trace from the consumer span through lock, kick-off, polls and watermark commit to the outcome's publish")
}
EOF
ok=""
for _ in $(seq 1 60); do
  if curl -fsS -o "$work/trace.json" "$query/api/traces/$trace_id" 2>/dev/null &&
    grep -q 'publish pathling.sync.completed.default' "$work/trace.json"; then
    ok=1
    break
  fi
  sleep 0.5
done
[ -n "$ok" ] || fail "Jaeger has no complete trace $trace_id"
# Jaeger stores spans in batches: wait until the trace stops growing.
spans=$(grep -o '"spanID"' "$work/trace.json" | wc -l)
for _ in $(seq 1 10); do
  sleep 1
  curl -fsS -o "$work/trace.json" "$query/api/traces/$trace_id"
  now=$(grep -o '"spanID"' "$work/trace.json" | wc -l)
  [ "$now" -eq "$spans" ] && break
  spans=$now
done
(cd "$work" && go run ./check.go "$trace_id" "$work/trace.json") || fail "the trace is not what it should be"
