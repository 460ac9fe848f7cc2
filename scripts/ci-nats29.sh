#!/usr/bin/env bash
# CI check: the tests that talk to NATS, against Debian's nats-server (2.9.x, the oldest server
# the service supports: docs/deploying.md) instead of the embedded 2.15. The tests start the
# binary themselves on a free loopback port with their own store (internal/testenv, env
# PATHLING_SYNC_NATS_SERVER); a system service the package may run on 4222 is never used.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
export CI="${CI:-true}"

bin="${PATHLING_SYNC_NATS_SERVER:-/usr/sbin/nats-server}"
if [ ! -x "$bin" ]; then
  echo "installing Debian's nats-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq nats-server || { apt-get update -qq && apt-get install -y -qq nats-server; }
  # The package may have started its service: the tests do not need it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet nats-server 2>/dev/null; then
    systemctl disable --now nats-server >/dev/null 2>&1 || true
  fi
  bin=/usr/sbin/nats-server
fi
"$bin" --version

PATHLING_SYNC_NATS_SERVER="$bin" go test -count=1 -timeout 6m \
  ./internal/testenv ./clients/natsbus ./handlers ./chains ./schedules ./cmd/pathling-sync
