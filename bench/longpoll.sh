#!/usr/bin/env bash
# Long-poll benchmark: N concurrent agent long polls against a private
# `meshfleet up` (release build, its own throw-away PostgreSQL), M spec changes,
# change->agent-received latency p50/p99 and the server's RSS.
#
#   bench/longpoll.sh [POLLS=2000] [CHANGES=200]
# It ends with status-report throughput: changed reports, then 10 s of unchanged heartbeats.
set -euo pipefail
cd "$(dirname "$0")/.."
polls=${1:-2000}
changes=${2:-200}

cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin longpoll-bench
data=$(mktemp -d /tmp/meshfleet-bench.XXXXXX)
out="$data/up.log"
MESHFLEET_LOG=warn MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 MESHFLEET_DB_MAX_CONNECTIONS=40 ./target/release/meshfleet up --port 0 --data-dir "$data" >"$out" 2>&1 &
server=$!
cleanup() { kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q "export TOKEN=" "$out" && break; sleep 0.1; done
base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$out")
token=$(sed -n 's/^  export TOKEN=//p' "$out")
echo "server: $base (pid $server), fd limit $(ulimit -n)"
./target/release/longpoll-bench --base "$base" --token "$token" --polls "$polls" --changes "$changes" --server-pid "$server"
