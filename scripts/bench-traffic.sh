#!/usr/bin/env bash
# Front door throughput and latency, switch times, rolling overhead and failed requests during
# deploys, against a real agent on loopback.
#
#   apt-get install -y haproxy wrk      # Debian packages
#   cargo build --release --bins && scripts/bench-traffic.sh
#
# 1. `gantry quickstart --dir WORK` makes the PKI, keys, config and the two sample artifacts. The
#    config is then changed to 16 ports and max_instances = 8 (two slots of 8) and a fresh
#    `gantry-agent run` is started on it.
# 2. Front door: one instance; `wrk -t2 -c32 -d10s --latency http://ADDR/` against the instance
#    directly, the front door and HAProxy (`mode tcp`, one backend = the same instance, run in
#    the foreground with a config in WORK), ROUNDS rounds (default 2), interleaved.
# 3. Failed requests under load: a load loop (python3, new TCP connection per request, LOAD_THREADS
#    threads, 2 s timeout) through the front door during a hot, a rolling, a blue-green and a
#    canary deploy: requests, failures, and the longest gap between two successful answers.
# 4. Blue-green switch (new slot healthy) and `gantry rollback` within the scale-down delay:
#    accepted -> traffic.switched from the events' ts_ms, and the agent's own
#    "generation N in effect after X ms".
# 5. Rolling deploy of 8 instances: accepted -> finished against the sum over instances of
#    instance.started -> health.passed.
# 6. `gantry stop`, SIGTERM to the agent, haproxy stopped, WORK removed (KEEP=1 keeps it).
#
# Environment: BIN_DIR, BENCH_PARENT (as scripts/bench.sh), ROUNDS, WRK_DURATION (default 10s),
# HEALTH_INTERVAL (default 100ms), LOAD_THREADS (default 4), PORT_BASE (first of the 16 instance
# ports, default 18300).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$REPO/target/release}
BENCH_PARENT=${BENCH_PARENT:-${TMPDIR:-/tmp}}
ROUNDS=${ROUNDS:-2}
WRK_DURATION=${WRK_DURATION:-10s}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-100ms}
LOAD_THREADS=${LOAD_THREADS:-4}
PORT_BASE=${PORT_BASE:-18300}
NAME=bench-traffic.sh
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
bench_require_binaries
for t in wrk haproxy python3; do
    if ! command -v "$t" >/dev/null; then
        echo "bench-traffic.sh: $t is missing (apt-get install -y haproxy wrk)" >&2
        exit 2
    fi
done

bench_work_dir bench-traffic
HAPROXY_PID=
LOAD_PID=

bench_stop_extra() {
    for p in $LOAD_PID $HAPROXY_PID; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
}
bench_traps

# ---------------------------------------------------------------------------------------------
# The load loop: fresh connection per request, counts failures, longest gap between successes.
# (Written into WORK after quickstart, which needs an empty directory.)
LOAD_PY=$(
    cat <<'PY'
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
threads, out = int(sys.argv[3]), sys.argv[4]
stop = threading.Event()
lock = threading.Lock()
ok_times, fails, errs = [], [0], {}
def one():
    s = socket.create_connection((host, port), timeout=2)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("status: " + data[:40].decode(errors="replace"))
def worker():
    while not stop.is_set():
        try:
            one()
            t = time.monotonic()
            with lock:
                ok_times.append(t)
        except Exception as e:
            with lock:
                fails[0] += 1
                k = type(e).__name__ + ": " + str(e)[:60]
                errs[k] = errs.get(k, 0) + 1
ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
t0 = time.monotonic()
for t in ts:
    t.start()
try:
    while not stop.is_set():
        time.sleep(0.05)
        try:
            open(out + ".stop").close()
            stop.set()
        except FileNotFoundError:
            pass
except KeyboardInterrupt:
    stop.set()
for t in ts:
    t.join(3)
t1 = time.monotonic()
ok_times.sort()
gap = max((b - a for a, b in zip(ok_times, ok_times[1:])), default=0.0)
with open(out, "w") as f:
    f.write("requests %d ok %d failed %d max_gap_ms %.1f secs %.1f rate %.0f\n" % (
        len(ok_times) + fails[0], len(ok_times), fails[0], gap * 1000, t1 - t0,
        (len(ok_times) + fails[0]) / (t1 - t0)))
    for k, v in sorted(errs.items()):
        f.write("  error x%d: %s\n" % (v, k))
PY
)

bench_machine
echo "wrk:        $(wrk -v 2>&1 | head -1)"
echo "haproxy:    $(haproxy -v | head -1)"

echo "== quickstart, then 16 ports and max_instances = 8"
if ! qs_out=$("$GANTRY" quickstart --dir "$WORK" 2>&1); then
    echo "$qs_out" >&2
    exit 1
fi
echo "$qs_out" >"$WORK/quickstart.log"
printf '%s\n' "$LOAD_PY" >"$WORK/load.py"
sed -i -E "s/^ports = \".*\"/ports = \"$PORT_BASE-$((PORT_BASE + 15))\"/; s/^max_instances = .*/max_instances = 8/" \
    "$WORK/agent.toml"
FRONT=$(sed -n -E 's/^listen = "(127\.0\.0\.1:[1-9][0-9]*)"$/\1/p' "$WORK/agent.toml")
grep -E '^(listen|ports|max_instances) ' "$WORK/agent.toml"

echo "== start the agent"
bench_start_agent agent-bench.log
bench_controller_env
echo "agent pid $AGENT_PID on $GANTRY_AGENT, front door $FRONT"

VERSION_N=0
# deploy OUT STRATEGY INSTANCES [extra flags...]: a deploy of the next version; fails the script
# unless it succeeds.
deploy() {
    local out=$1 strategy=$2 instances=$3 artifact
    shift 3
    VERSION_N=$((VERSION_N + 1))
    if ((VERSION_N % 2)); then artifact=sample-1.0.0.tar.gz; else artifact=sample-1.1.0.tar.gz; fi
    if ! "$GANTRY" deploy --json --key "$WORK/keys/deployer.key" --app sample \
        --version "5.0.$VERSION_N" --artifact "$WORK/$artifact" --health http:/health \
        --health-interval "$HEALTH_INTERVAL" --strategy "$strategy" --instances "$instances" \
        --reason "bench-traffic $strategy" "$@" -- bin/gantry-sample-app >"$out" 2>"$out.err"; then
        echo "bench-traffic.sh: $strategy deploy 5.0.$VERSION_N failed:" >&2
        cat "$out" "$out.err" >&2
        exit 1
    fi
    if ! grep -q '"outcome":"succeeded"' "$out"; then
        echo "bench-traffic.sh: $strategy deploy 5.0.$VERSION_N did not succeed:" >&2
        cat "$out" >&2
        exit 1
    fi
}
ts_of() { # file step-or-type -> ts_ms of the last matching event
    grep -E "\"(step|type)\":\"$2\"" "$1" | tail -1 | sed -E 's/.*"ts_ms":([0-9]+).*/\1/'
}
in_effect() { # file -> the X of "generation N in effect after X ms" of the last switch
    grep '"step":"traffic.switched"' "$1" | tail -1 | sed -E 's/.*in effect after ([0-9]+) ms.*/\1/'
}

# ---------------------------------------------------------------------------------------------
echo "== front door vs direct vs HAProxy (wrk -t2 -c32 -d$WRK_DURATION --latency, $ROUNDS rounds)"
deploy "$WORK/d-base.jsonl" rolling 1
INSTANCE=$(sed -n -E 's/.*"addr": *"(127\.0\.0\.1:[0-9]+)".*"weight": *[1-9].*/\1/p' \
    "$WORK/data/apps/sample/traffic/routes.json" | head -1)
if [[ -z $INSTANCE ]]; then
    INSTANCE=$(python3 -c 'import json,sys
t=json.load(open(sys.argv[1]))
print([b["addr"] for b in t["backends"] if b.get("weight",0)>0 and not b.get("draining")][0])' \
        "$WORK/data/apps/sample/traffic/routes.json")
fi
HAPROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server s1 $INSTANCE
CFG
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$HAPROXY_PORT/" 2>/dev/null && break
    sleep 0.05
done
echo "instance $INSTANCE, front door $FRONT, haproxy 127.0.0.1:$HAPROXY_PORT (pid $HAPROXY_PID)"
for addr in "$INSTANCE" "$FRONT" "127.0.0.1:$HAPROXY_PORT"; do
    curl -fsS "http://$addr/" >/dev/null || { echo "bench-traffic.sh: $addr does not answer" >&2; exit 1; }
done
WRK_ROWS=$WORK/wrk.tsv
: >"$WRK_ROWS"
to_ms() { # wrk latency (e.g. 1.23ms, 850.00us, 1.02s) -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
# MODE keepalive: wrk's 32 connections stay open (byte copying only); MODE close: each request
# on a new connection (`Connection: close`), so every request is also accepted, routed and
# connected to the backend anew.
for round in $(seq 1 "$ROUNDS"); do
    for mode in keepalive close; do
    for target in direct frontdoor haproxy; do
        case $target in
        direct) addr=$INSTANCE ;;
        frontdoor) addr=$FRONT ;;
        haproxy) addr=127.0.0.1:$HAPROXY_PORT ;;
        esac
        out=$WORK/wrk-$round-$mode-$target.txt
        if [[ $mode == close ]]; then
            wrk -t2 -c32 -d"$WRK_DURATION" --latency -H 'Connection: close' "http://$addr/" >"$out" 2>&1
        else
            wrk -t2 -c32 -d"$WRK_DURATION" --latency "http://$addr/" >"$out" 2>&1
        fi
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
        errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' "$out")
        printf '%s\t%s\t%s\t%s\t%s\n' "$round-$mode" "$target" "$rps" "$p50" "$p99" >>"$WRK_ROWS"
        printf 'round %s %-9s %-10s %10s req/s  p50 %8s ms  p99 %8s ms  %s\n' "$round" "$mode" \
            "$target" "$rps" "$p50" "$p99" "${errs:-no errors}"
    done
    done
done
echo "-- per round: front door / haproxy req/s; added latency vs direct (ms)"
awk -F'\t' '{rps[$1,$2]=$3; p50[$1,$2]=$4; p99[$1,$2]=$5; if (!($1 in seen)) {seen[$1]=1; order[++n]=$1}}
    END {
        for (i = 1; i <= n; i++) {
            r = order[i]
            printf "round %-11s front door %.2fx haproxy req/s; added p50/p99 vs direct: front door %+.3f/%+.3f, haproxy %+.3f/%+.3f\n",
                r, rps[r,"frontdoor"] / rps[r,"haproxy"],
                p50[r,"frontdoor"] - p50[r,"direct"], p99[r,"frontdoor"] - p99[r,"direct"],
                p50[r,"haproxy"] - p50[r,"direct"], p99[r,"haproxy"] - p99[r,"direct"]
        }
    }' "$WRK_ROWS"
kill -TERM "$HAPROXY_PID"
wait "$HAPROXY_PID" 2>/dev/null || true
HAPROXY_PID=

timeline() { # file -> one line: each step with ms since the previous event
    python3 -c 'import json,sys
ev = [json.loads(l) for l in open(sys.argv[1])]
print("  steps (+ms since the previous event): " + ", ".join(
    "%s +%d" % (b.get("step") or b.get("type"), b["ts_ms"] - a["ts_ms"]) for a, b in zip(ev, ev[1:])))' "$1"
}

# ---------------------------------------------------------------------------------------------
# with_load NAME CMD...: runs CMD while the load loop goes through the front door; prints
# requests, failures and the longest gap between successful answers.
with_load() {
    local name=$1 out=$WORK/load-$1.txt
    shift
    rm -f "$out" "$out.stop"
    python3 "$WORK/load.py" 127.0.0.1 "${FRONT##*:}" "$LOAD_THREADS" "$out" &
    LOAD_PID=$!
    sleep 1
    "$@"
    sleep 1
    : >"$out.stop"
    wait "$LOAD_PID" || true
    LOAD_PID=
    printf '%-11s %s\n' "$name" "$(head -1 "$out")"
    tail -n +2 "$out"
}
echo "== failed requests during deploys (load: $LOAD_THREADS threads, new connection per request, 2 s timeout)"
with_load idle sleep 3
HOT_RUNS=${HOT_RUNS:-3}
for i in $(seq 1 "$HOT_RUNS"); do
    with_load "hot-$i" deploy "$WORK/d-hot-$i.jsonl" hot 1
    timeline "$WORK/d-hot-$i.jsonl"
done
with_load rolling deploy "$WORK/d-rolling.jsonl" rolling 2
with_load blue-green deploy "$WORK/d-bg-load.jsonl" blue-green 2 --scale-down-delay 1s
sleep 2
with_load canary deploy "$WORK/d-canary.jsonl" canary 2 --step 10:1s --step 50:1s --step 100:0s

# ---------------------------------------------------------------------------------------------
echo "== blue-green switch and rollback (ms, agent clock)"
SWITCH_ROWS=$WORK/switch.tsv
: >"$SWITCH_ROWS"
for i in 1 2 3; do
    # a) deploy: acceptance -> switch (includes unpack, start and health), health -> switch
    deploy "$WORK/bg-$i.jsonl" blue-green 1 --scale-down-delay 5m
    f=$WORK/bg-$i.jsonl
    acc=$(ts_of "$f" accepted)
    hp=$(ts_of "$f" health.passed)
    sw=$(ts_of "$f" traffic.switched)
    printf 'deploy\t%s\t%s\t%s\n' "$((sw - acc))" "$((sw - hp))" "$(in_effect "$f")" >>"$SWITCH_ROWS"
    # b) rollback within the scale-down delay: acceptance -> switch back
    r=$WORK/rb-$i.jsonl
    "$GANTRY" rollback --json --key "$WORK/keys/deployer.key" --app sample --reason bench >"$r" 2>"$r.err" ||
        { cat "$r" "$r.err" >&2; exit 1; }
    acc=$(ts_of "$r" accepted)
    sw=$(ts_of "$r" traffic.switched)
    printf 'rollback\t%s\t-\t%s\n' "$((sw - acc))" "$(in_effect "$r")" >>"$SWITCH_ROWS"
    # c) manual promote of a healthy new slot: the promote job's acceptance -> switch
    VERSION_N=$((VERSION_N + 1))
    f=$WORK/bgm-$i.jsonl
    "$GANTRY" deploy --json --key "$WORK/keys/deployer.key" --app sample --version "5.0.$VERSION_N" \
        --artifact "$WORK/sample-1.0.0.tar.gz" --health http:/health \
        --health-interval "$HEALTH_INTERVAL" --strategy blue-green --manual-promote \
        --scale-down-delay 1s -- bin/gantry-sample-app >"$f" 2>"$f.err" &
    dpid=$!
    for _ in $(seq 1 200); do
        grep -q '"step":"rollout.paused"' "$f" 2>/dev/null && break
        sleep 0.05
    done
    p=$WORK/pr-$i.jsonl
    "$GANTRY" promote --json --key "$WORK/keys/deployer.key" --app sample >"$p" 2>"$p.err" ||
        { cat "$p" "$p.err" >&2; exit 1; }
    wait "$dpid" || { cat "$f" "$f.err" >&2; exit 1; }
    acc=$(ts_of "$p" accepted)
    sw=$(ts_of "$f" traffic.switched)
    printf 'promote\t%s\t-\t%s\n' "$((sw - acc))" "$(in_effect "$f")" >>"$SWITCH_ROWS"
    sleep 1.5
done
echo "kind      accepted->switched  health->switched  agent's 'in effect after'"
awk -F'\t' '{printf "%-9s %12s ms %14s ms %16s ms\n", $1, $2, ($3 == "-" ? "-" : $3), $4}' "$SWITCH_ROWS"

# ---------------------------------------------------------------------------------------------
echo "== rolling deploy of 8 instances"
deploy "$WORK/roll8-up.jsonl" rolling 8
for i in 1 2; do
    f=$WORK/roll8-$i.jsonl
    deploy "$f" rolling 8 --drain-timeout 5s
    total=$(($(ts_of "$f" finished) - $(ts_of "$f" accepted)))
    # instance.started -> health.passed, paired in order of the events
    waits=$(python3 -c 'import json,sys
started, total, n = [], 0, 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("step") == "instance.started": started.append(e["ts_ms"])
    elif e.get("step") == "health.passed" and started:
        total += e["ts_ms"] - started.pop(0); n += 1
print(n, total)' "$f")
    read -r n wsum <<<"$waits"
    echo "rolling 8, run $i: accepted->finished $total ms; $n health waits summing to $wsum ms; agent's own $((total - wsum)) ms ($(((total - wsum) / 8)) ms per instance)"
    # where the time goes: ms from each step to the next one, summed by step
    python3 -c 'import json,sys
ev = [json.loads(l) for l in open(sys.argv[1])]
acc = {}
for a, b in zip(ev, ev[1:]):
    k = a.get("step") or a.get("type")
    acc[k] = acc.get(k, [0, 0]); acc[k][0] += b["ts_ms"] - a["ts_ms"]; acc[k][1] += 1
print("  time after each step until the next (ms, total/count): " + ", ".join(
    "%s %d/%d" % (k, v[0], v[1]) for k, v in sorted(acc.items(), key=lambda kv: -kv[1][0])))' "$f"
done
echo "== done; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
