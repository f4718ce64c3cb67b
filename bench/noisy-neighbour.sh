#!/usr/bin/env bash
# Noisy neighbour: one tenant's script at full speed (32 connections, ignoring
# Retry-After) beside another tenant's steady reads, against a private release
# `meshfleet up`, once with the request limits off and once with the defaults.
# Prints the quiet tenant's p50/p99 alone and beside the noise, the noisy
# tenant's accepted and refused rates, and ends with
# `RESULT noisy_neighbour_p99_ratio <x> ratio target <= 2 PASS|FAIL`.
#
#   bench/noisy-neighbour.sh [--seconds 10] [--noisy-connections 32] [--quiet-rate 25]
#
# Takes about a minute after the build; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshfleet -p meshfleet-tests --bin meshfleet --bin noisy-bench
timeout -k 20 600 ./target/release/noisy-bench --meshfleet target/release/meshfleet "$@"
