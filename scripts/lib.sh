# Shared by the benchmark scripts: binaries check, work dir, machine description, starting the
# agent, and the clean-up that stops the quickstart's sample app before the agent (instances
# outlive it).
# Source it after setting NAME (the script's name, for messages) and BIN_DIR.

GANTRY=$BIN_DIR/gantry
AGENT_BIN=$BIN_DIR/gantry-agent
AGENT_PID=
AGENT_ADDR=

# Exits 2 unless the release binaries exist.
bench_require_binaries() {
    local b
    for b in "$GANTRY" "$AGENT_BIN" "$BIN_DIR/gantry-sample-app"; do
        if [[ ! -x $b ]]; then
            echo "$NAME: $b is missing; run: cargo build --release --bins" >&2
            exit 2
        fi
    done
}

# A fresh work dir under BENCH_PARENT, traversable by the app's user.
bench_work_dir() {
    WORK=$(mktemp -d "$BENCH_PARENT/gantry-$1.XXXXXX")
    chmod 0711 "$WORK"
}

# date, cores, CPU, load, kernel and the work dir's filesystem.
bench_machine() {
    echo "== machine"
    echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc:      $(nproc)"
    echo "cpu:        $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "load:       $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel:     $(uname -r)"
    echo "work dir:   $WORK on $(findmnt -n -o SOURCE,FSTYPE -T "$WORK" | tr -s ' ')"
    echo "binaries:   $BIN_DIR"
}

# Starts `gantry-agent run` on WORK/agent.toml, its log in WORK/$1, and waits (20 s at most)
# for its address; sets AGENT_PID and AGENT_ADDR. Exits 1, with the log's tail, when the agent
# exits first or writes no address in time.
bench_start_agent() {
    local log=$WORK/$1
    rm -f "$WORK/data/run/listen.addr"
    "$AGENT_BIN" run --config "$WORK/agent.toml" >"$log" 2>&1 &
    AGENT_PID=$!
    for _ in $(seq 1 400); do
        [[ -s $WORK/data/run/listen.addr ]] && break
        if ! kill -0 "$AGENT_PID" 2>/dev/null; then
            echo "$NAME: the agent exited while starting:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    if [[ ! -s $WORK/data/run/listen.addr ]]; then
        echo "$NAME: the agent did not write its address within 20s" >&2
        exit 1
    fi
    AGENT_ADDR=$(cat "$WORK/data/run/listen.addr")
}

# Points the gantry CLI at the agent bench_start_agent started, with quickstart's agent id,
# PKI and state dir in WORK.
bench_controller_env() {
    export GANTRY_AGENT=$AGENT_ADDR GANTRY_AGENT_ID=quickstart-agent GANTRY_CA=$WORK/pki/ca.pem \
        GANTRY_CERT=$WORK/pki/controller.pem GANTRY_CERT_KEY=$WORK/pki/controller.key \
        GANTRY_STATE_DIR=$WORK/state
}

# Stops the app `sample` (when the agent still has an address; at most 30 s, as the
# controller certificate may be paused by a flood that used it), then the agent: SIGTERM,
# up to 15 s, then SIGKILL.
bench_stop_agent() {
    [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null || return 0
    if [[ -s $WORK/data/run/listen.addr ]]; then
        GANTRY_AGENT=$(cat "$WORK/data/run/listen.addr") GANTRY_AGENT_ID=quickstart-agent \
            GANTRY_CA=$WORK/pki/ca.pem GANTRY_CERT=$WORK/pki/controller.pem \
            GANTRY_CERT_KEY=$WORK/pki/controller.key GANTRY_STATE_DIR=$WORK/state \
            timeout 30 "$GANTRY" stop --key "$WORK/keys/deployer.key" --app sample \
            --reason "bench: clean up" --json >"$WORK/stop.jsonl" 2>&1 ||
            echo "$NAME: gantry stop failed: $(tail -3 "$WORK/stop.jsonl")" >&2
    fi
    kill -TERM "$AGENT_PID"
    for _ in $(seq 1 300); do
        kill -0 "$AGENT_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$AGENT_PID" 2>/dev/null; then
        echo "$NAME: agent $AGENT_PID ignored SIGTERM for 15s; killing it" >&2
        kill -KILL "$AGENT_PID"
    fi
    wait "$AGENT_PID" 2>/dev/null
}

# Installs the clean-up: on exit (and on INT/TERM, exiting 130) the function bench_stop_extra
# if the script defines one, then the agent and WORK; the script's exit code is kept.
bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local rc=$?
    set +e
    if declare -F bench_stop_extra >/dev/null; then
        bench_stop_extra
    fi
    bench_stop_agent
    bench_remove_work
    exit "$rc"
}

# Removes WORK unless KEEP=1.
bench_remove_work() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
