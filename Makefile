# pathling-sync — see README.md.
GO        ?= go
BIN       := bin
PKGS      := ./...
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)
FUZZTIME  ?= 10s

.PHONY: all build run test test-short lint fmt vet staticcheck fuzz bench bench-go clean e2e-tracing ci-observability faults faults-ci faults-bin

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: the whole service on embedded defaults (NATS, Redis-protocol store, Pathling and source emulators).
## Not `go run`: it exits 1 on Ctrl-C whatever the program does, and make would report "Error 1".
run:
	$(GO) build -o $(BIN)/ ./cmd/pathling-sync
	$(BIN)/pathling-sync dev

## test: every test, with the race detector.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint: vet staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(STATICCHECK) $(PKGS)

## fuzz: run each fuzz target briefly (FUZZTIME each).
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$spec $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$spec; \
	  done; done

## bench: the benchmark of the real service (docs/performance.md): every scenario against the real
## `pathling-sync serve` binary, with the primitive floor when FLOORBENCH (or -floor) names floorbench's
## directory. BENCHFLAGS passes flags, e.g. BENCHFLAGS="-scenario throughput,paced -short".
BENCHFLAGS ?=
bench:
	$(GO) run ./cmd/pathling-sync-bench $(BENCHFLAGS)

## bench-go: the Go micro-benchmarks of single operations.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

## e2e-tracing: one sync's trace in a real Jaeger v2 (built from the Go module proxy once, cached; not in CI).
e2e-tracing:
	bash scripts/e2e-tracing.sh

## ci-observability: promtool checks of the alert rules and of a real /metrics exposition (CI runs it).
ci-observability:
	bash scripts/ci-observability.sh

## faults: the whole fault table (docs/reliability.md): real nats-server, redis-server, emulators
## and pathling-sync processes on 127.0.0.1; ~10 min. FAULTS=<names> picks scenarios.
FAULTS_BIN ?= $(CURDIR)/$(BIN)/faults
FAULTS     ?= all
faults: faults-bin
	@PATHLING_SYNC_FAULTS=$(FAULTS) PATHLING_SYNC_FAULTS_BIN=$(FAULTS_BIN) PATHLING_SYNC_FAULTS_TABLE=$(FAULTS_BIN)/table.md \
	  $(GO) test -count=1 -timeout 40m -run '^TestFaults$$' ./e2e/faults/; st=$$?; \
	  echo "== make faults FAULTS=$(FAULTS)"; cat $(FAULTS_BIN)/table.md 2>/dev/null; exit $$st

## faults-ci: the bounded subset CI runs (scripts/ci-faults.sh); under 5 minutes.
faults-ci:
	@$(MAKE) --no-print-directory faults FAULTS=ci

faults-bin:
	@mkdir -p $(FAULTS_BIN)
	$(GO) build -o $(FAULTS_BIN)/ ./cmd/...
	$(GO) build -o $(FAULTS_BIN)/nats-server github.com/nats-io/nats-server/v2

clean:
	rm -rf $(BIN)
