#!/usr/bin/env bash
# Hot-deploy latency and agent memory against a real agent on loopback.
#
#   cargo build --release --bins && scripts/bench.sh [N]
#
# 1. `gantry quickstart --dir WORK` makes a throw-away CA, certificates, keys, the agent config
#    and two sample-app artifacts (it deploys both once, stops the app and its agent).
# 2. A fresh `gantry-agent run` on that config; its VmRSS once idle.
# 3. N hot deploys (default 10) with `gantry deploy --json`, versions 2.0.1, 2.0.2, ...
#    alternating the two artifacts (both already in the agent's store: no upload). For each:
#      wall        the controller's clock around the `gantry deploy` process (sign, connect,
#                  submit, follow to the end)
#      agent       finished.ts_ms - accepted.ts_ms from the JSON events (the agent's clock)
#      app         health.passed.ts_ms - instance.started.ts_ms: the app becoming healthy,
#                  as seen by the health probe (interval HEALTH_INTERVAL)
#      agent_share agent - app: what the agent itself spends (unpack, stop, switch, start, audit)
#      ctl_share   wall - agent: controller process, TLS, submit and event stream, split into
#      ctl_pre     accepted.ts_ms - the controller's start (hash the artifact, sign, connect,
#                  ask whether the artifact is there, submit, admission)
#      ctl_post    the controller's exit - finished.ts_ms (last event to process exit)
#    then median and p90 (nearest rank) of each.
# 4. The agent's VmRSS and VmHWM again, idle after the deploys.
# 5. `gantry stop` of the app, SIGTERM to the agent, the work directory removed (KEEP=1 keeps
#    it), also on failure or Ctrl-C.
#
# Environment: BIN_DIR (default target/release next to this script's repo), BENCH_PARENT
# (where the work directory is made; default ${TMPDIR:-/tmp}; it decides the disk under test),
# HEALTH_INTERVAL (default 100ms), SETTLE_SECS (idle time before reading RSS, default 2).
set -euo pipefail

N=${1:-10}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$REPO/target/release}
BENCH_PARENT=${BENCH_PARENT:-${TMPDIR:-/tmp}}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-100ms}
SETTLE_SECS=${SETTLE_SECS:-2}
NAME=bench.sh
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
bench_require_binaries
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
    echo "bench.sh: N must be a positive integer, got '$N'" >&2
    exit 2
fi

# Instances may run as another user (nobody, when we are root): they must reach their release.
bench_work_dir bench
bench_traps

rss() { # pid -> "VmRSS kB VmHWM kB"
    awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {printf "%d %d", r, h}' "/proc/$1/status"
}

kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

bench_machine

echo "== quickstart (PKI, keys, config, artifacts)"
if ! qs_out=$("$GANTRY" quickstart --dir "$WORK" 2>&1); then
    echo "$qs_out" >&2
    exit 1
fi
echo "$qs_out" >"$WORK/quickstart.log"

echo "== start the agent"
bench_start_agent agent-bench.log
bench_controller_env
echo "agent pid $AGENT_PID on $GANTRY_AGENT"
sleep "$SETTLE_SECS"
read -r RSS0 HWM0 <<<"$(rss "$AGENT_PID")"
echo "idle after start: VmRSS $(kib_to_mib "$RSS0") MiB ($RSS0 kB), VmHWM $(kib_to_mib "$HWM0") MiB"

echo "== $N hot deploys (health interval $HEALTH_INTERVAL)"
ts_of() { # file step-or-type -> ts_ms of the last matching event
    grep -E "\"(step|type)\":\"$2\"" "$1" | tail -1 | sed -E 's/.*"ts_ms":([0-9]+).*/\1/'
}
ROWS=$WORK/rows.tsv
: >"$ROWS"
printf '%-3s %-8s %-20s %8s %8s %8s %12s %10s %8s %8s\n' "#" version artifact wall agent app \
    agent_share ctl_share ctl_pre ctl_post
for i in $(seq 1 "$N"); do
    version=2.0.$i
    if ((i % 2)); then artifact=sample-1.0.0.tar.gz; else artifact=sample-1.1.0.tar.gz; fi
    out=$WORK/deploy-$i.jsonl
    t0=$(date +%s%N)
    if ! "$GANTRY" deploy --json --key "$WORK/keys/deployer.key" --app sample \
        --version "$version" --artifact "$WORK/$artifact" --health http:/health \
        --health-interval "$HEALTH_INTERVAL" --reason "bench $i" \
        -- bin/gantry-sample-app >"$out" 2>"$out.err"; then
        echo "bench.sh: deploy $version failed:" >&2
        cat "$out" "$out.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    if ! grep -q '"type":"finished".*"outcome":"succeeded"\|"outcome":"succeeded".*"type":"finished"' "$out"; then
        echo "bench.sh: deploy $version did not succeed:" >&2
        cat "$out" >&2
        exit 1
    fi
    accepted=$(ts_of "$out" accepted)
    started=$(ts_of "$out" instance.started)
    healthy=$(ts_of "$out" health.passed)
    finished=$(ts_of "$out" finished)
    wall=$(((t1 - t0) / 1000000))
    agent=$((finished - accepted))
    app=$((healthy - started))
    share=$((agent - app))
    ctl=$((wall - agent))
    pre=$((accepted - t0 / 1000000))
    post=$((t1 / 1000000 - finished))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wall" "$agent" "$app" "$share" "$ctl" "$pre" "$post" \
        >>"$ROWS"
    printf '%-3s %-8s %-20s %6sms %6sms %6sms %10sms %8sms %6sms %6sms\n' "$i" "$version" \
        "$artifact" "$wall" "$agent" "$app" "$share" "$ctl" "$pre" "$post"
done

stats() { # column number -> "median p90" (nearest rank), in ms
    cut -f"$1" "$ROWS" | sort -n | awk '{v[NR]=$1} END {
        m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        r = int(0.9 * NR); if (r < 0.9 * NR) r++
        printf "%g %g", m, v[r]
    }'
}
echo "== summary over $N deploys (ms): median p90"
col=1
for name in "wall (controller clock)" "agent (accepted->finished)" "app (started->healthy)" \
    "agent share (agent - app)" "controller share (wall - agent)" \
    "  before accepted" "  after finished"; do
    read -r med p90 <<<"$(stats "$col")"
    printf '%-34s median %6s  p90 %6s\n' "$name" "$med" "$p90"
    col=$((col + 1))
done

sleep "$SETTLE_SECS"
read -r RSS1 HWM1 <<<"$(rss "$AGENT_PID")"
echo "== agent memory"
echo "idle after start:      VmRSS $(kib_to_mib "$RSS0") MiB ($RSS0 kB), VmHWM $(kib_to_mib "$HWM0") MiB"
echo "idle after $N deploys: VmRSS $(kib_to_mib "$RSS1") MiB ($RSS1 kB), VmHWM $(kib_to_mib "$HWM1") MiB"
if ((RSS1 < 20 * 1024 && RSS0 < 20 * 1024)); then
    echo "goal VmRSS < 20 MiB: met"
else
    echo "goal VmRSS < 20 MiB: NOT met"
fi
