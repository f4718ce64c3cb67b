#!/usr/bin/env bash
# Long-poll benchmark: N concurrent agent long polls against a private
# `meshfleet up` (release build, its own throw-away PostgreSQL): the server's
# memory per held poll (RSS with the polls held minus RSS with none, over N;
# measured at each of the comma-separated counts), then M spec changes and the
# change->agent-received latency p50/p99, then status-report throughput
# (changed reports, then 10 s of unchanged heartbeats).
#
#   bench/longpoll.sh [POLLS=2000,10000] [CHANGES=200]
#
# Each poll takes a file descriptor in the server and one in this client: the
# script raises its soft limit to the hard one. Ends with RESULT lines
# (longpoll_memory_per_poll target <= 16 KiB; see tests/src/bin/longpoll_bench.rs
# for what is subtracted).
set -euo pipefail
cd "$(dirname "$0")/.."
polls=${1:-2000,10000}
changes=${2:-200}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
most=${polls##*,}
if (( most + 512 > $(ulimit -n) )); then
    echo "fd limit $(ulimit -n) is too low for $most polls (raise the hard limit: ulimit -Hn)" >&2
    exit 1
fi

cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin longpoll-bench
bin=${CARGO_TARGET_DIR:-target}/release
data=$(mktemp -d /tmp/meshfleet-bench.XXXXXX)
out="$data/up.log"
MESHFLEET_LOG=warn MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 MESHFLEET_DB_MAX_CONNECTIONS=40 "$bin"/meshfleet up --port 0 --data-dir "$data" >"$out" 2>&1 &
server=$!
cleanup() { kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q "export TOKEN=" "$out" && break; sleep 0.1; done
base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$out")
token=$(sed -n 's/^  export TOKEN=//p' "$out")
echo "server: $base (pid $server), fd limit $(ulimit -n)"
timeout -k 20 540 "$bin"/longpoll-bench --base "$base" --token "$token" --polls "$polls" --changes "$changes" --server-pid "$server"
