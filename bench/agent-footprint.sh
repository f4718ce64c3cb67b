#!/usr/bin/env bash
# Agent footprint: the release `meshfleet-agent` binary (over its simulated
# cluster, MESHFLEET_SIMULATE=true) against a private `meshfleet up`; prints its
# resident memory once converged and its CPU use over an idle minute.
#
#   bench/agent-footprint.sh [IDLE_SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-60}

cargo build --release -q -p meshfleet -p meshfleet-agent --bin meshfleet --bin meshfleet-agent
data=$(mktemp -d /tmp/meshfleet-agent-bench.XXXXXX)
MESHFLEET_LOG=warn MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 MESHFLEET_MAX_CLUSTERS_PER_TENANT=0 ./target/release/meshfleet up --port 0 --data-dir "$data" >"$data/up.log" 2>&1 &
server=$!
agent=""
cleanup() {
    [ -n "$agent" ] && kill "$agent" 2>/dev/null || true
    kill -INT "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q "export TOKEN=" "$data/up.log" && break; sleep 0.1; done
base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$data/up.log")
token=$(sed -n 's/^  export TOKEN=//p' "$data/up.log")

curl -sf -X PUT "$base/v1/clusters/footprint" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"mesh":{"upgrade":{"mode":"manual","version":"1.28.2"},"enrolledNamespaces":["shop"],"waypoints":[{"namespace":"shop","name":"wp"}]}}' >/dev/null
bootstrap=$(curl -sf -X POST "$base/v1/clusters/footprint/bootstrap-tokens" -H "Authorization: Bearer $token" | sed 's/.*"token":"\([^"]*\)".*/\1/')

MESHFLEET_SIMULATE=true MESHFLEET_BOOTSTRAP_TOKEN="$bootstrap" MESHFLEET_URL="$base" \
    MESHFLEET_HEALTH_ADDR=127.0.0.1:0 MESHFLEET_LOG=warn ./target/release/meshfleet-agent >"$data/agent.log" 2>&1 &
agent=$!

for _ in $(seq 1 300); do
    curl -sf "$base/v1/clusters/footprint" -H "Authorization: Bearer $token" | grep -q '"health":"Healthy"' && break
    sleep 0.1
done
curl -sf "$base/v1/clusters/footprint" -H "Authorization: Bearer $token" | grep -o '"health":"[A-Za-z]*"'

ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
hz=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print $2}' "/proc/$agent/status"; }
echo "agent RSS once converged: $(( $(rss) / 1024 )).$(( ($(rss) % 1024) * 10 / 1024 )) MiB"
before=$(ticks)
sleep "$idle"
after=$(ticks)
echo "agent CPU over ${idle}s idle: $(( (after - before) * 1000 / hz )) ms ($(awk -v t=$((after - before)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.3f", 100 * t / hz / s }')% of one core)"
echo "agent RSS after the idle minute: $(( $(rss) / 1024 )).$(( ($(rss) % 1024) * 10 / 1024 )) MiB (peak $(awk '/VmHWM/ {print $2}' "/proc/$agent/status") KiB)"
