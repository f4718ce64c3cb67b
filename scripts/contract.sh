#!/usr/bin/env bash
# The API contract: schemathesis (pinned in scripts/contract-requirements.txt,
# in a virtualenv of its own under target/) against a private `meshfleet up`,
# with every check on and the stateful phase, over every operation of
# /openapi.json. A cluster with a registered agent gives the agent routes
# their credential. Exits non-zero on any failure.
#
#   scripts/contract.sh [EXAMPLES=200]      examples per operation and phase
#
# Leaves the last run's report (JUnit, NDJSON events) in target/contract-report/.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-200}
venv=target/contract-venv
requirements=scripts/contract-requirements.txt
report=target/contract-report

# 1. schemathesis, exactly as pinned (the venv is rebuilt when the pins change).
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
    echo "== installing schemathesis into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi
st="$venv/bin/schemathesis"
echo "== $("$st" --version)"

# 2. meshfleet up on a free port, with its own data folder and PostgreSQL.
cargo build -q -p meshfleet --bin meshfleet
data=$(mktemp -d /tmp/meshfleet-contract.XXXXXX)
log="$data/up.log"
MESHFLEET_LOG=${MESHFLEET_LOG:-warn} MESHFLEET_TENANT_RATE_LIMIT=0 MESHFLEET_AGENT_RATE_LIMIT=0 \
    ./target/debug/meshfleet up --port 0 --data-dir "$data" >"$log" 2>&1 &
server=$!
cleanup() {
    kill -INT "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    grep -q "export TOKEN=" "$log" && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "meshfleet up exited"; exit 1; }
    sleep 0.1
done
base=$(sed -n 's#^  API *\(http://[^/]*\)/v1/clusters#\1#p' "$log")
[ -n "$base" ] || { cat "$log"; echo "meshfleet up printed no API address"; exit 1; }
echo "== meshfleet up at $base (data in $data)"

# 3. Credentials: one user token that may use every user route (owner in the
# operator's tenant, and sre), and the credential of an agent registered for
# a cluster of another tenant (so that the run cannot delete or revoke it).
mint() { ./target/debug/meshfleet token --data-dir "$data" --ttl 2h "$@"; }
json() { "$venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)$1)"; }
owner=$(mint --tenant contract-agents --role owner)
call() {
    curl -sS --fail-with-body -H "Authorization: Bearer $owner" -H 'Content-Type: application/json' "$@"
}
call -X PUT "$base/v1/clusters/agent-under-test" \
    -d '{"labels": {"purpose": "contract"}, "mesh": {"upgrade": {"mode": "manual", "version": "1.27.1"}}}' >/dev/null
bootstrap=$(call -X POST "$base/v1/clusters/agent-under-test/bootstrap-tokens" | json "['token']")
MESHFLEET_CONTRACT_AGENT_CREDENTIAL=$(curl -sS --fail-with-body -H 'Content-Type: application/json' \
    -X POST "$base/v1/agent/register" \
    -d "{\"bootstrapToken\": \"$bootstrap\", \"facts\": {\"platform\": \"simulated\"}}" | json "['credential']")
MESHFLEET_CONTRACT_TOKEN=$(mint --tenant ops --role owner,sre)
export MESHFLEET_CONTRACT_TOKEN MESHFLEET_CONTRACT_AGENT_CREDENTIAL

# 4. The run: every phase, every check (scripts/contract.toml gives each
# security scheme its credential, and says which refusals of valid requests
# depend on state the schema cannot know).
rm -rf "$report" && mkdir -p "$report"
started=$(date +%s)
status=0
"$st" --config-file scripts/contract.toml run "$base/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    --workers 1 \
    --request-timeout 100 \
    --report junit,ndjson --report-dir "$report" \
    --no-color 2>&1 | tee "$data/schemathesis.log" || status=$?
echo "== schemathesis: exit $status after $(($(date +%s) - started)) s"
# Its closing line must say that it found nothing (it has exited 0 on a
# failure in its stateful phase).
closing=$(grep '^=\+ .* =\+$' "$data/schemathesis.log" | tail -1)
case "$closing" in
    *failure* | *error* | "") echo "schemathesis found problems: ${closing:-no summary}"; status=1 ;;
esac

# 5. No 5xx, whatever the checks said.
if grep -q '"http.response.status_code".*5[0-9][0-9]\|status=5[0-9][0-9]' "$log"; then
    echo "the server answered 5xx during the run:"
    grep 'status=5[0-9][0-9]' "$log" | head -20
    status=1
fi
exit "$status"
