#!/usr/bin/env bash
# Rollout benchmark: N real agents (each over a simulated cluster) in one
# process against a private release `meshfleet up`; one fleet rollout of all of
# them from 1.27.1 to 1.28.2 in three stages (1% / 50% / rest, soak 0,
# maxConcurrency 500). Prints the control-plane overhead (wall time minus the
# agents' own time), the database load during the rollout (pg_stat_database and
# pg_stat_statements, which this script preloads with one restart of `up`), and
# ends with `RESULT rollout_overhead <s> s target <= 5 PASS|FAIL`.
#
#   bench/rollout.sh [CLUSTERS=10000] [more rollout-bench flags, e.g. --watch rollout]
#   bench/rollout.sh 2000 --memory-only   # stop once the simulator's memory is measured
#   SIM_WRAP="heaptrack -o /tmp/sim" bench/rollout.sh 2000 --memory-only   # profile it
#   REPLICAS=2 bench/rollout.sh ...   # plus REPLICAS-1 more api processes (`meshfleet
#                                     # serve`) and reconcilers (`meshfleet reconcile`) on
#                                     # the same PostgreSQL; agents spread over every api
#
# Stops by itself: the run after the build is bounded to 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-10000}
shift || true

cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin rollout-bench
bin=${CARGO_TARGET_DIR:-target}/release
# N agents hold N long polls: the server and the simulator each need N sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
deadline=$((SECONDS + 600))
data=$(mktemp -d /tmp/meshfleet-rollout.XXXXXX)
server=

replicas=${REPLICAS:-1}
extra=()

start_replicas() {
    # More api processes and reconcilers on up's PostgreSQL. `serve` refuses
    # up's dev key, so tenant calls stay on up's api; the agents, which use
    # their own credentials, are spread over every api.
    [ "$replicas" -gt 1 ] || return 0
    [ -n "$dburl" ] || { echo "REPLICAS needs up's database URL" >&2; exit 1; }
    openssl genpkey -algorithm ed25519 -out "$data/replica-signer.pem" 2>/dev/null
    openssl pkey -in "$data/replica-signer.pem" -pubout -out "$data/replica.pem" 2>/dev/null
    agent_bases=()
    for r in $(seq 2 "$replicas"); do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        DATABASE_URL="$dburl" MESHFLEET_LOG=warn MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_TENANT_RATE_LIMIT=0 \
            MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 MESHFLEET_DB_MAX_CONNECTIONS=40 \
            MESHFLEET_JWT_KEYS="EdDSA:$data/replica.pem" MESHFLEET_JWT_ISSUER=https://bench.invalid MESHFLEET_JWT_AUDIENCE=meshfleet \
            "$bin"/meshfleet serve --listen "127.0.0.1:$port" >"$data/serve-$r.log" 2>&1 &
        extra+=($!)
        DATABASE_URL="$dburl" MESHFLEET_LOG=warn "$bin"/meshfleet reconcile >"$data/reconcile-$r.log" 2>&1 &
        extra+=($!)
        for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "api replica $r did not start:" >&2; tail "$data/serve-$r.log" >&2; exit 1; }
        agent_bases+=(--agent-base "http://127.0.0.1:$port")
    done
    echo "replicas: $replicas apis and $replicas reconcilers on one PostgreSQL (extra pids ${extra[*]})"
}

start_up() {
    MESHFLEET_LOG=warn MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 MESHFLEET_DB_MAX_CONNECTIONS=40 "$bin"/meshfleet up --port 0 --data-dir "$data" >"$data/up.log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do
        grep -q "export TOKEN=" "$data/up.log" && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "export TOKEN=" "$data/up.log"; then
        echo "meshfleet up did not start:" >&2
        tail -20 "$data/up.log" >&2
        exit 1
    fi
    base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$data/up.log")
    pghost=$(sed -n 's#^  database psql "host=\([^ ]*\) port=\([0-9]*\) .*#\1#p' "$data/up.log")
    pgport=$(sed -n 's#^  database psql "host=\([^ ]*\) port=\([0-9]*\) .*#\2#p' "$data/up.log")
    dburl=
    if [ -n "$pghost" ]; then dburl="postgres://meshfleet@localhost:${pgport:-5432}/meshfleet?host=$pghost"; fi
}
stop_up() {
    if [ -n "$server" ]; then
        kill -INT "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=
    fi
}
cleanup() {
    for p in "${extra[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${extra[@]}"; do wait "$p" 2>/dev/null || true; done
    stop_up
    if [ -f "$data/pg-location" ]; then
        pg=$(cat "$data/pg-location")
        case "$pg" in /var/lib/meshfleet/pg-*) rm -rf "$pg" ;; esac
    fi
    rm -rf "$data"
}
trap cleanup EXIT

start_up
if [ -n "$dburl" ]; then
    # pg_stat_statements needs shared_preload_libraries: set it, restart `up`.
    rc=0
    "$bin"/rollout-bench --prepare-database --database-url "$dburl" || rc=$?
    if [ "$rc" = 10 ]; then
        stop_up
        start_up
    fi
fi
echo "meshfleet up at $base (data $data)"
agent_bases=()
start_replicas

budget=$((deadline - SECONDS))
[ "$budget" -gt 60 ] || budget=60
set +e
timeout -s INT -k 20 "$budget" ${SIM_WRAP:-} "$bin"/rollout-bench --base "$base" --data-dir "$data" \
    --clusters "$clusters" ${dburl:+--database-url "$dburl"} --server-pid "$server" --timeout "$((budget - 15))s" "${agent_bases[@]}" "$@" \
    | tee "$data/bench.out" | grep --line-buffered -v '^RESULT '
rc=${PIPESTATUS[0]}
set -e
echo "server RSS at the end: $(awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$server/status" 2>/dev/null)"
if [ "$rc" != 0 ]; then
    echo "last lines of the server's log (MESHFLEET_LOG=warn):"
    tail -n 15 "$data/up.log" | cut -c1-400
fi
[ "$rc" != 124 ] || echo "rollout-bench was stopped after ${budget}s"
grep '^RESULT ' "$data/bench.out" | grep -v '^RESULT rollout_overhead ' || true
case " $* " in
*" --memory-only "*) ;; # stopped before the rollout: no overhead figure
*)
    result=$(grep '^RESULT rollout_overhead ' "$data/bench.out" | tail -n 1)
    echo "${result:-RESULT rollout_overhead inf s target <= 5 FAIL}"
    ;;
esac
exit "$rc"
