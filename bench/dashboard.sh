#!/usr/bin/env bash
# Dashboard benchmark: loads CLUSTERS (default 100,000) clusters with statuses
# into a fresh database of the real app (its own private PostgreSQL, started
# from the machine's binaries), then prints p50/p99/max latency of each
# dashboard endpoint over real HTTP, 30 calls each after 3 warm-up calls.
#
#   bench/dashboard.sh [CLUSTERS=100000] [more dashboard-bench flags]
#
# Stops by itself: bounded to 10 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-100000}
shift || true
cargo build --release -q -p meshfleet-tests --bin dashboard-bench
MESHFLEET_LOG=warn timeout -k 20 600 ./target/release/dashboard-bench --clusters "$clusters" "$@"
