#!/usr/bin/env bash
# Faults under load: the real app (API, LISTEN loop, reconciler; release
# build, in one process) on a PostgreSQL of its own, WRITERS writers doing
# GET then PUT/PATCH with If-Match and AGENTS light agents long-polling and
# reporting; then PostgreSQL restarted (fast shutdown, start), out of
# connections, out of disk (a tmpfs tablespace; needs root for mount) and a
# statement timeout (a side transaction locks the clusters table). Prints a
# row per fault (requests, answers, writes acknowledged and lost, recovery
# time, agents that saw a change made after the fault) and RESULT lines.
# Listens on 127.0.0.1 only (the database on a Unix socket); a few minutes.
#
#   bench/faults.sh [WRITERS=50] [AGENTS=1000] [OUTAGE=3s]
set -euo pipefail
cd "$(dirname "$0")/.."
writers=${1:-50}
agents=${2:-1000}
outage=${3:-3s}

cargo build --release -q -p meshfleet-tests --bin faults-bench
# two sockets per agent (client and server side) in one process
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec ./target/release/faults-bench \
  --writers "$writers" --agents "$agents" --outage "$outage"
