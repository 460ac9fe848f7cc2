#!/usr/bin/env bash
# Checks the deployment files, offline (only the Go module proxy is needed):
#   - Kubernetes: kubeconform (strict) on deploy/kubernetes and on the Helm
#     chart's output, against JSON Schemas generated from Kubernetes' own
#     OpenAPI document (module k8s.io/kubernetes) and prometheus-operator's CRDs
#     (module github.com/prometheus-operator/prometheus-operator);
#   - Helm: helm lint --strict and helm template, with the default values and
#     with CI values that switch every optional part on and off;
#   - the chart renders the same objects as deploy/kubernetes, and every
#     shipped configuration loads (go test ./deploy/);
#   - Compose: deploy/compose/compose.yaml loaded by compose-go, the loader of
#     `docker compose` (schema, interpolation, references);
#   - Docker: a copy of the build context without what .dockerignore leaves
#     out holds every package the Dockerfile builds, with cgo off. (No image is
#     built: there is no container engine here; `docker build` runs when one
#     answers.)
# Tools are built with `go install` once and cached in $PATHLING_SYNC_TOOLS
# (default ~/.cache/pathling-sync-ci): helm's first build takes ~6 minutes on
# 2 cores, later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VERSION=1.35.4          # schemas and helm --kube-version
PROMETHEUS_OPERATOR_VERSION=v0.85.0

TOOLS=${PATHLING_SYNC_TOOLS:-$HOME/.cache/pathling-sync-ci}
BIN=$TOOLS/bin
mkdir -p "$BIN"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step() { echo "== deploy [$((SECONDS))s]: $*"; }

# tool NAME VERSION PACKAGE: go install into $BIN/NAME-VERSION, once.
tool() {
  local name=$1 version=$2 pkg=$3 out=$BIN/$1-$2
  if [ ! -x "$out" ]; then
    step "building $name $version (go install $pkg@$version)"
    local start=$SECONDS
    GOBIN="$tmp/gobin" go install "$pkg@$version"
    mv "$tmp/gobin/$name" "$out"
    echo "   $name built in $((SECONDS - start))s"
  fi
}
tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
helm=$BIN/helm-$HELM_VERSION
kubeconform=$BIN/kubeconform-$KUBECONFORM_VERSION
step "building scripts/deploycheck"
go build -C scripts/deploycheck -o "$BIN/deploycheck" .
deploycheck=$BIN/deploycheck

# moddir MODULE@VERSION: the module's directory in the module cache.
moddir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'
}
schemas=$TOOLS/schemas/k8s-$KUBERNETES_VERSION-po-$PROMETHEUS_OPERATOR_VERSION
if [ ! -f "$schemas/.complete" ]; then
  step "generating JSON Schemas: Kubernetes $KUBERNETES_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  k8s=$(moddir "k8s.io/kubernetes@v$KUBERNETES_VERSION")
  po=$(moddir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  rm -rf "$schemas"
  "$deploycheck" k8s-schemas -swagger "$k8s/api/openapi-spec/swagger.json" \
    -crds "$po/example/prometheus-operator-crd" -out "$schemas"
  touch "$schemas/.complete"
fi
kubeconform() {
  "$kubeconform" -strict -summary -output text -kubernetes-version "$KUBERNETES_VERSION" \
    -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}

step "kubeconform deploy/kubernetes"
kubeconform -skip Kustomization deploy/kubernetes

chart=deploy/helm/pathling-sync
mkdir -p "$tmp/rendered"
for values in default full minimal; do
  args=()
  [ "$values" = default ] || args=(-f "$chart/ci/$values-values.yaml")
  step "helm lint + template ($values values)"
  "$helm" lint --strict --kube-version "$KUBERNETES_VERSION" "${args[@]}" "$chart"
  "$helm" template pathling-sync "$chart" --namespace pathling-sync \
    --kube-version "$KUBERNETES_VERSION" "${args[@]}" >"$tmp/rendered/$values.yaml"
  kubeconform "$tmp/rendered/$values.yaml"
done
step "helm lint refuses a misspelt value (values.schema.json)"
if "$helm" lint --strict --kube-version "$KUBERNETES_VERSION" --set replicaCont=3 "$chart" >"$tmp/lint.out" 2>&1; then
  cat "$tmp/lint.out"; echo "helm lint accepted an unknown value" >&2; exit 1
fi

step "the chart renders deploy/kubernetes; shipped configurations load (go test ./deploy/)"
PATHLING_SYNC_HELM_RENDERED="$tmp/rendered" go test -count=1 ./deploy/

step "compose (compose-go)"
"$deploycheck" compose deploy/compose/compose.yaml
if docker compose version >/dev/null 2>&1; then
  step "docker compose config"
  docker compose -f deploy/compose/compose.yaml --profile tools config --quiet
fi

step "Dockerfile: the build context (less .dockerignore) holds every package, static build"
ctx=$tmp/context
mkdir -p "$ctx"
# The build context less what .dockerignore drops (its top-level entries).
excluded=$(sed -n 's#^\([A-Za-z0-9._-][A-Za-z0-9._-]*\)$#\1#p' .dockerignore | paste -sd'|')
git ls-files -co --exclude-standard | grep -Ev "^($excluded)(/|$)" | tar -cf - -T - | tar -xf - -C "$ctx"
# go list loads every package (and embedded file) the image's build needs,
# as the Dockerfile builds it (CGO off, linux), without compiling: a file
# missing from the context, or a package that needs cgo, is an error here.
errs=$(cd "$ctx" && CGO_ENABLED=0 GOOS=linux go list -e -deps \
  -f '{{if or .Error .DepsErrors}}{{.ImportPath}}: {{.Error}} {{.DepsErrors}}{{end}}' \
  ./cmd/pathling-sync ./cmd/pathling-emulator ./cmd/bulk-source-emulator)
if [ -n "$errs" ]; then
  echo "$errs" >&2
  echo "the Docker build context lacks what the build needs (check .dockerignore)" >&2
  exit 1
fi
grep -q '^var version = ' cmd/pathling-sync/main.go || { echo "main.version (set by the Dockerfile's -ldflags) is gone" >&2; exit 1; }
if docker info >/dev/null 2>&1; then
  step "docker build"
  docker build -f deploy/docker/Dockerfile -t pathling-sync:ci .
else
  echo "   (no container engine: the image itself is not built)"
fi
echo "== deploy: all checks passed"
