#!/usr/bin/env bash
# Fleet benchmark: N real agents (each over a simulated cluster) in one
# process against a private release `meshfleet up` (bench/rollout.sh with
# --propagate). In order:
#   - the simulator's memory once all N are converged (target: N = 10,000 under 2 GB);
#   - propagation: one spec change per cluster through the API, each timed
#     from its write's acknowledgement to its agent receiving it (target p99 <= 1 s);
#   - a fleet-wide rollout of all N (1.27.1 -> 1.28.2, three stages) and its
#     control-plane overhead (target <= 5 s).
# Ends with one RESULT line per figure.
#
#   bench/fleet.sh [CLUSTERS=10000] [more rollout-bench flags]
#
# Stops by itself: the run after the build is bounded to 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-10000}
shift || true
exec bench/rollout.sh "$clusters" --propagate "$@"
