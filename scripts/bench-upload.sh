#!/usr/bin/env bash
# Artifact upload throughput, fresh and resumed from the middle, and Info latency on the same
# connection during an upload against idle, against a real agent on loopback.
#
#   cargo build --release --bins && cargo build --release -p gantry-client --example upload_bench
#   scripts/bench-upload.sh
#
# 1. `gantry quickstart --dir WORK` for a throw-away PKI and agent config.
# 2. A fresh `gantry-agent run` on that config.
# 3. The `upload_bench` example (controller/client/examples/upload_bench.rs): GANTRY_BENCH_INFOS
#    idle Info calls; a fresh upload of a GANTRY_BENCH_MB MiB artifact (default 256) while
#    Info is called every 10 ms on the same HTTP/2 connection; then a second artifact of which
#    the agent is left holding the first half, resumed with gantry-client, Info again meanwhile.
# 4. The agent stopped and WORK removed (KEEP=1 keeps it).
#
# Environment: BIN_DIR (default target/release), BENCH_PARENT (default ${TMPDIR:-/tmp}; the disk
# under test), GANTRY_BENCH_MB, GANTRY_BENCH_INFOS.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$REPO/target/release}
BENCH_PARENT=${BENCH_PARENT:-${TMPDIR:-/tmp}}
NAME=bench-upload.sh
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
bench_require_binaries
EXAMPLE=$BIN_DIR/examples/upload_bench
if [[ ! -x $EXAMPLE ]]; then
    echo "$NAME: $EXAMPLE is missing; run: cargo build --release -p gantry-client --example upload_bench" >&2
    exit 2
fi

bench_work_dir upload
bench_traps
bench_machine

echo "== quickstart (PKI, keys, config)"
if ! qs_out=$("$GANTRY" quickstart --dir "$WORK" 2>&1); then
    echo "$qs_out" >&2
    exit 1
fi
echo "$qs_out" >"$WORK/quickstart.log"

echo "== start the agent"
bench_start_agent agent-bench.log
bench_controller_env
echo "agent pid $AGENT_PID on $GANTRY_AGENT"

echo "== uploads (${GANTRY_BENCH_MB:-256} MiB)"
mkdir -p "$WORK/bench"
GANTRY_BENCH_DIR=$WORK/bench "$EXAMPLE"
