#!/usr/bin/env bash
# Fleet benchmark: N real agents (each over a simulated cluster) in one
# process against a private release `meshfleet up`: time to converge, time for a
# fleet-wide upgrade, the simulator's RSS and the server's RSS.
#
#   bench/fleet.sh [CLUSTERS=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-2000}

cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin fleet-sim
data=$(mktemp -d /tmp/meshfleet-fleet.XXXXXX)
MESHFLEET_LOG=warn MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 MESHFLEET_DB_MAX_CONNECTIONS=40 ./target/release/meshfleet up --port 0 --data-dir "$data" >"$data/up.log" 2>&1 &
server=$!
cleanup() { kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q "export TOKEN=" "$data/up.log" && break; sleep 0.1; done
base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$data/up.log")
./target/release/fleet-sim --base "$base" --data-dir "$data" --clusters "$clusters" \
    --exit-when-converged --upgrade-to 1.28.2 --heartbeat 30s | grep -v '^  t+'
echo "server RSS at the end: $(awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$server/status")"
