#!/usr/bin/env bash
# Fleet scale without an agent per cluster: N clusters registered through the
# API of a private release `meshfleet up` (one tenant), M agents registered,
# their status reports driven at full speed (a share of them changes, the rest
# heartbeats), then GET, list and summary latency at that size. Each figure is
# printed beside its target; ends with `RESULT` lines.
#
#   bench/scale.sh [--clusters 100000] [--agents 10000] [--seconds 10] [--change-percent 1]
#
# Stops by itself: bounded to 10 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin scale-bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
timeout -k 20 600 ./target/release/scale-bench --meshfleet target/release/meshfleet "$@"
