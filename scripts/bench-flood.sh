#!/usr/bin/env bash
# Valid-job admission under a forged-signature flood, and the agent's memory after a large
# number of rejected jobs, against a real agent over gRPC with mutual TLS on loopback.
#
#   cargo build --release --bins && scripts/bench-flood.sh
#
# 1. `gantry quickstart --dir WORK` (PKI, keys, config), then a fresh `gantry-agent run` on it.
#    The config keeps the quickstart controller's fingerprint pin and also accepts client
#    certificates named `controller` or `stolen-controller` (tls.client_names): the bench floods
#    with a second certificate, `stolen-controller` (`gantry dev-pki --add-client`), as
#    an attacker holding one controller's certificate would (GANTRY_FLOOD_SAME_CERT=1: the flood
#    uses the valid jobs' own certificate instead). The agent's operational log goes to
#    WORK/agent.log; its size is printed before and after the bench.
# 2. `cargo bench -p gantry-agent --bench flood` (agent/benches/flood.rs: release profile)
#    with GANTRY_FLOOD_* pointing at that agent: by default the valid-job rate before, under
#    and after the flood; GANTRY_FLOOD_PHASES=volume runs the flood alone up to
#    GANTRY_FLOOD_TOTAL rejections or GANTRY_FLOOD_MAX_SECS (with CLIENT_REJECTIONS_* raised,
#    or the agent pauses the flood's certificate at about 10 rejections a second).
# 3. `gantry stop` of the sample app (deployed by the quickstart), SIGTERM to the agent, WORK
#    removed (KEEP=1 keeps it).
#
# Environment: BIN_DIR, BENCH_PARENT (as scripts/bench.sh), VALID_APPS (apps with a valid client
# each, default 4: `sample` and flood2..floodN added to the config), CLIENT_REJECTIONS_BURST and
# CLIENT_REJECTIONS_PER_SECOND (the agent's limits.client_rejections_*; default: the config's
# defaults, 100 and 10/s), CLIENT_CONNECTIONS (limits.client_connections; default the flood's
# connections plus VALID_APPS), and the GANTRY_FLOOD_* variables documented in
# agent/benches/flood.rs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$REPO/target/release}
BENCH_PARENT=${BENCH_PARENT:-${TMPDIR:-/tmp}}
NAME=bench-flood.sh
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
bench_require_binaries

bench_work_dir bench-flood

bench_traps

bench_machine

echo "== quickstart"
if ! qs_out=$("$GANTRY" quickstart --dir "$WORK" 2>&1); then
    echo "$qs_out" >&2
    exit 1
fi
echo "$qs_out" >"$WORK/quickstart.log"
# VALID_APPS - 1 more apps (nothing deployed), so that valid jobs can run in parallel: the agent
# runs one job per app at a time.
VALID_APPS=${VALID_APPS:-4}
USER_LINE=$(grep -m1 '^user = ' "$WORK/agent.toml")
APPS=sample
for i in $(seq 2 "$VALID_APPS"); do
    printf '\n[apps.flood%d]\n%s\nports = "%d-%d"\nmax_instances = 1\n\n[apps.flood%d.allow]\nstop = ["deployer"]\n' \
        "$i" "$USER_LINE" $((18400 + 2 * i)) $((18401 + 2 * i)) "$i" >>"$WORK/agent.toml"
    APPS=$APPS,flood$i
done

# A second controller with its own certificate from the quickstart CA, admitted by DNS name
# beside the existing fingerprint pin.
if ! add_out=$("$GANTRY" dev-pki --out "$WORK/pki" --add-client stolen-controller 2>&1); then
    echo "$add_out" >&2
    exit 1
fi
# quickstart writes every [tls] and [limits] key (the typed config builder), so the values
# below replace the written ones rather than adding a second key.
sed -i 's/^client_names = \[\]$/client_names = ["controller", "stolen-controller"]/' "$WORK/agent.toml"
grep -q '^client_names = \["controller", "stolen-controller"\]' "$WORK/agent.toml" || {
    echo "bench-flood.sh: could not add client_names to $WORK/agent.toml" >&2
    exit 1
}

# The per-certificate rejection budget (limits.client_rejections_*): the config's defaults
# unless CLIENT_REJECTIONS_BURST / CLIENT_REJECTIONS_PER_SECOND are set (set them high for the
# volume phase, to reach a million rejections from one certificate).
for setting in burst per_second; do
    var=CLIENT_REJECTIONS_${setting^^}
    if [[ -n ${!var:-} ]]; then
        sed -i "s/^client_rejections_$setting = .*/client_rejections_$setting = ${!var}/" "$WORK/agent.toml"
    fi
done
grep '^client_rejections_' "$WORK/agent.toml"
# The per-certificate connection limit (limits.client_connections, default 64): raised to the
# flood's connections plus the valid clients' unless CLIENT_CONNECTIONS is set, so that the
# flood measures the budget, not the limit (CLIENT_CONNECTIONS=64 measures with the default).
CLIENT_CONNECTIONS=${CLIENT_CONNECTIONS:-$((${GANTRY_FLOOD_CONNS:-64} + VALID_APPS))}
sed -i "s/^client_connections = .*/client_connections = $CLIENT_CONNECTIONS/" "$WORK/agent.toml"
grep -q "^client_connections = $CLIENT_CONNECTIONS\$" "$WORK/agent.toml" || {
    echo "bench-flood.sh: could not set client_connections in $WORK/agent.toml" >&2
    exit 1
}
echo "client connection limit: $CLIENT_CONNECTIONS"

echo "== start the agent"
echo "load:       $(uptime)"
bench_start_agent agent.log
ADDR=$AGENT_ADDR
echo "agent pid $AGENT_PID on $ADDR"
sleep 2
LOG_BEFORE=$(stat -c %s "$WORK/agent.log")
echo "agent log before the bench: $LOG_BEFORE bytes"

GANTRY_FLOOD_DIR=$WORK GANTRY_FLOOD_ADDR=$ADDR GANTRY_FLOOD_PID=$AGENT_PID GANTRY_FLOOD_APPS=$APPS \
    cargo bench --manifest-path "$REPO/Cargo.toml" -p gantry-agent --bench flood

echo "== after"
echo "load:       $(uptime)"
LOG_AFTER=$(stat -c %s "$WORK/agent.log")
echo "agent log: $LOG_AFTER bytes, grew $((LOG_AFTER - LOG_BEFORE)) bytes ($(wc -l <"$WORK/agent.log") lines); audit dir: $(du -sh "$WORK/data/audit" 2>/dev/null | cut -f1)"
echo "agent log: $(grep -c 'job rejected' "$WORK/agent.log" || true) 'job rejected' lines, $(grep -c 'rejections' "$WORK/agent.log" || true) lines mentioning rejections"
echo "agent log lines by message (top 5):"
sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' "$WORK/agent.log" | cut -c1-100 | sort | uniq -c | sort -rn | head -5
awk '/^VmRSS:|^VmHWM:|^Threads:/' "/proc/$AGENT_PID/status"
