#!/usr/bin/env bash
# CI check of the observability files (docs/observability.md):
#   - promtool check rules / test rules on deploy/prometheus/alerts.yaml;
#   - promtool check metrics on the real /metrics of the service after an authenticated sync
#     (written by TestAuthenticatedSyncLogsNoSecrets when PATHLING_SYNC_METRICS_OUT is set).
# promtool comes from Debian's prometheus package: only its promtool binary is extracted (no
# service, no user), unless PROMTOOL or a promtool on PATH is given.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

promtool="${PROMTOOL:-$(command -v promtool || true)}"
if [ -z "$promtool" ]; then
  echo "installing promtool (Debian package prometheus, binary only)"
  (
    cd "$work"
    apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }
  )
  dpkg-deb -x "$work"/prometheus_*.deb "$work/pkg"
  install -m 0755 "$work/pkg/usr/bin/promtool" /usr/local/bin/promtool
  promtool=/usr/local/bin/promtool
fi
"$promtool" --version | head -n 1

echo "-- promtool check rules"
"$promtool" check rules deploy/prometheus/alerts.yaml
echo "-- promtool test rules"
"$promtool" test rules deploy/prometheus/alerts_test.yaml

echo "-- promtool check metrics (the service's /metrics after a sync)"
PATHLING_SYNC_METRICS_OUT="$work/metrics.txt" \
  go test -count=1 -run '^TestAuthenticatedSyncLogsNoSecrets$' ./cmd/pathling-sync/
if [ ! -s "$work/metrics.txt" ]; then
  echo "no /metrics exposition was written" >&2
  exit 1
fi
echo "$(grep -c '^pathling_sync_' "$work/metrics.txt") pathling_sync_ series, $(grep -c '^# TYPE' "$work/metrics.txt") metric families"
"$promtool" check metrics <"$work/metrics.txt"
echo "promtool check metrics: no problems"
