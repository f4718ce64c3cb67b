#!/usr/bin/env bash
# Conditional GET: requests/s of `If-None-Match` -> 304 on a private release
# `meshfleet up` (request limits off) against a bare axum handler answering the
# same path shape (built in this workspace, run the same way), in one run with
# the same client: the tenant's `GET /v1/clusters/{name}` and the agent's
# `GET /v1/agent/desired-state` (no waitSeconds), measured in rounds that take the
# three in turn. Prints each rate and ends with
# `RESULT conditional_get_ratio_<path> <x> x target >= 0.5 PASS|FAIL` per path.
#
#   bench/conditional-get.sh [--seconds 10] [--rounds 5] [--connections 128] [--clusters 200]
#
# Takes about a minute after the build; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin conditional-get-bench
target=${CARGO_TARGET_DIR:-target}
timeout -k 20 600 "$target/release/conditional-get-bench" --meshfleet "$target/release/meshfleet" "$@"
