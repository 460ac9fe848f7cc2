#!/usr/bin/env bash
# CI: the fault suite's bounded subset (make faults-ci, under 5 minutes): real pathling-sync
# processes against real nats-server (built from the module cache, the version in go.mod),
# redis-server and the emulators, with kill -9, SIGTERM, SIGSTOP, restarts, error bursts,
# duplicate storms, bad input and a secret scan. The whole table: make faults (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

start=$(date +%s)
make --no-print-directory faults-ci
echo "fault suite, CI subset: $(( $(date +%s) - start ))s"
