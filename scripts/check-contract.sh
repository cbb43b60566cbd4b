#!/usr/bin/env bash
# Contract checks against a running orders-gateway.
#
#   scripts/check-contract.sh BASE_URL        e.g. scripts/check-contract.sh http://127.0.0.1:8080
#
# Installs what it needs when missing or stale (npm ci from package-lock.json; a Python venv
# at .tools/py-contract with pinned schemathesis and openapi-spec-validator), then runs:
#   (a) openapi-spec-validator on BASE_URL/openapi.json
#   (b) httpyac on tests/http/*.http             -> test-results/httpyac.xml
#   (c) newman on postman/ (collection + env)    -> test-results/newman.xml
#   (d) schemathesis on BASE_URL/openapi.json (every check, >= MIN_CASES generated cases)
#                                                -> test-results/schemathesis.xml
# Every tool runs even when an earlier one fails; the exit status is non-zero if any failed.
#
# Environment knobs:
#   SCHEMATHESIS_MAX_EXAMPLES  -n per operation (default 1000)
#   SCHEMATHESIS_MIN_CASES     fail unless schemathesis generated at least this many (default 1000)
#   SCHEMATHESIS_SEED          fixed seed for a reproducible run (default: random, printed)
#   CONTRACT_STREAM_TIMEOUT_MS request timeout for the stream requests (default 15000)
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 BASE_URL   (e.g. http://127.0.0.1:8080)" >&2
    exit 2
fi
BASE_URL="${1%/}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
VENV="$ROOT/.tools/py-contract"
RESULTS="$ROOT/test-results"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-1000}"
MIN_CASES="${SCHEMATHESIS_MIN_CASES:-1000}"
SEED="${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}"
STREAM_TIMEOUT_MS="${CONTRACT_STREAM_TIMEOUT_MS:-15000}"

log() { printf '==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Tools. Each step is skipped (in milliseconds) when its stamp matches what is pinned.

ensure_node_modules() {
    command -v npm >/dev/null || { echo "npm is not installed (Node 20+ needed)" >&2; return 1; }
    local want have=""
    want="$(sha256sum package-lock.json | cut -d' ' -f1)"
    [[ -f node_modules/.contract-stamp ]] && have="$(cat node_modules/.contract-stamp)"
    if [[ "$want" != "$have" || ! -x node_modules/.bin/httpyac || ! -x node_modules/.bin/newman ]]; then
        log "npm ci (node_modules missing or older than package-lock.json)"
        npm ci --no-audit --no-fund --loglevel=error >&2
        echo "$want" >node_modules/.contract-stamp
    fi
}

ensure_python_venv() {
    local want="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
    local have=""
    [[ -f "$VENV/.contract-stamp" ]] && have="$(cat "$VENV/.contract-stamp")"
    if [[ "$want" != "$have" || ! -x "$VENV/bin/schemathesis" || ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV with $want"
        if [[ ! -x "$VENV/bin/python" ]] && ! python3 -m venv "$VENV" >&2; then
            rm -rf "$VENV"
            echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
            return 1
        fi
        # shellcheck disable=SC2086  # $want is a list of requirements
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
        echo "$want" >"$VENV/.contract-stamp"
    fi
}

ensure_node_modules
ensure_python_venv
mkdir -p "$RESULTS"

if ! curl -fsS -o /dev/null --max-time 5 "$BASE_URL/healthz"; then
    echo "no gateway answers at $BASE_URL/healthz" >&2
    exit 1
fi

declare -a SUMMARY=()
FAILED=0
record() { # record TOOL STATUS DETAIL
    SUMMARY+=("$(printf '%-22s %-4s %s' "$1" "$2" "$3")")
    [[ "$2" == PASS ]] || FAILED=1
}

# ---------------------------------------------------------------------------------------------
# (a) The OpenAPI document is valid.
SPEC="$RESULTS/openapi.json"
log "(a) openapi-spec-validator $BASE_URL/openapi.json"
spec_status="$(curl -sS -o "$SPEC" -w '%{http_code}' --max-time 10 "$BASE_URL/openapi.json" || echo 000)"
if [[ "$spec_status" != 200 ]]; then
    record openapi-spec-validator FAIL "GET /openapi.json answered $spec_status"
elif "$VENV/bin/openapi-spec-validator" "$SPEC" >"$RESULTS/openapi-spec-validator.log" 2>&1; then
    record openapi-spec-validator PASS "$(jq -r '"OpenAPI \(.openapi), \(.paths | length) paths"' "$SPEC" 2>/dev/null || echo valid)"
else
    cat "$RESULTS/openapi-spec-validator.log" >&2
    record openapi-spec-validator FAIL "invalid document (see test-results/openapi-spec-validator.log)"
fi

# ---------------------------------------------------------------------------------------------
# (b) httpyac: the asserting .http files. Run from the repo root with relative paths
# (httpyac crashes on ../ paths).
log "(b) httpyac tests/http/*.http"
httpyac_status=0
node_modules/.bin/httpyac send tests/http/*.http --all -e local --var "baseUrl=$BASE_URL" \
    --timeout "$STREAM_TIMEOUT_MS" --junit >"$RESULTS/httpyac.xml" 2>"$RESULTS/httpyac.log" \
    || httpyac_status=$?
# Count assertions and print the failing ones (to stderr) from the junit report.
counts="$(python3 - "$RESULTS/httpyac.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print(f"0 0 (unreadable junit report: {e})")
    sys.exit()
total = failed = 0
for suite in root.iter("testsuite"):
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    for case in suite.iter("testcase"):
        total += 1
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is None:
            continue
        failed += 1
        detail = {p.get("name"): p.get("value") for p in case.findall("properties/property")}
        why = detail.get("displayMessage") or problem.get("message") or (problem.text or "").strip()
        print(f"httpyac FAILED {props.get('file')}:{props.get('line')} [{props.get('title')}] "
              f"{case.get('name')}: {why}", file=sys.stderr)
print(total, failed, "")
EOF
)"
read -r hy_total hy_failed hy_note <<<"$counts"
if [[ "$httpyac_status" == 0 && "$hy_failed" == 0 && "$hy_total" -gt 0 ]]; then
    record httpyac PASS "$((hy_total - hy_failed)) passed, $hy_failed failed assertions"
else
    tail -n 20 "$RESULTS/httpyac.log" >&2
    record httpyac FAIL "$((hy_total - hy_failed)) passed, $hy_failed failed assertions (exit $httpyac_status) $hy_note"
fi

# ---------------------------------------------------------------------------------------------
# (c) newman: the Postman collection.
log "(c) newman postman/orders-gateway.postman_collection.json"
newman_status=0
node_modules/.bin/newman run postman/orders-gateway.postman_collection.json \
    -e postman/local.postman_environment.json --env-var "baseUrl=$BASE_URL" \
    --timeout-request "$STREAM_TIMEOUT_MS" --color off \
    --reporters cli,junit --reporter-junit-export "$RESULTS/newman.xml" \
    >"$RESULTS/newman.log" 2>&1 || newman_status=$?
nm_line="$(python3 - "$RESULTS/newman.log" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
def row(name):
    m = re.search(rf"│\s*{name}\s*│\s*(\d+)\s*│\s*(\d+)\s*│", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
(ra, rf), (aa, af) = row("requests"), row("assertions")
print(f"{aa - af} passed, {af} failed assertions; {ra} requests, {rf} failed requests")
EOF
)"
if [[ "$newman_status" == 0 ]]; then
    record newman PASS "$nm_line"
else
    # The failure table (newman colours it even with --color off).
    sed 's/\x1b\[[0-9;]*m//g' "$RESULTS/newman.log" | sed -n '/^ *# *failure/,$p' | grep -v '^ *$' >&2 || true
    record newman FAIL "$nm_line (exit $newman_status)"
fi

# ---------------------------------------------------------------------------------------------
# (d) schemathesis: property-based fuzzing of every documented operation but the endless stream.
log "(d) schemathesis $BASE_URL/openapi.json (-n $MAX_EXAMPLES, seed $SEED)"
st_status=0
if [[ "$spec_status" != 200 ]]; then
    record schemathesis FAIL "no /openapi.json to test against"
else
    rm -f "$RESULTS/schemathesis.ndjson"
    # Run inside test-results/ (git-ignored): schemathesis keeps its crash cache for
    # `st replay ID` in ./.schemathesis/ of the working directory.
    (cd "$RESULTS" && "$VENV/bin/schemathesis" run "$BASE_URL/openapi.json" \
        --url "$BASE_URL" \
        --exclude-path /orders/stream \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$MAX_EXAMPLES" \
        --continue-on-failure \
        --seed "$SEED" \
        --workers 2 \
        --request-timeout 10 \
        --generation-database none \
        --no-color \
        --report junit,ndjson \
        --report-junit-path "$RESULTS/schemathesis.xml" \
        --report-ndjson-path "$RESULTS/schemathesis.ndjson" \
        >"$RESULTS/schemathesis.log" 2>&1) || st_status=$?
    cases="$(python3 - "$RESULTS/schemathesis.log" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
m = re.findall(r"Test cases:\s*([\d,]+)\s*generated", text)
print(m[-1].replace(",", "") if m else 0)
EOF
)"
    if [[ "$st_status" == 0 && "$cases" -ge "$MIN_CASES" ]]; then
        record schemathesis PASS "$cases generated cases, no failures (seed $SEED)"
    else
        if grep -q '= FAILURES =' "$RESULTS/schemathesis.log"; then
            sed -n '/= FAILURES =/,$p' "$RESULTS/schemathesis.log" >&2
        else
            tail -n 40 "$RESULTS/schemathesis.log" >&2
        fi
        note="$cases generated cases"
        [[ "$cases" -ge "$MIN_CASES" ]] || note="$note (fewer than the $MIN_CASES required)"
        record schemathesis FAIL "$note, exit $st_status (seed $SEED; see test-results/schemathesis.log; replay from test-results/)"
    fi
fi

# ---------------------------------------------------------------------------------------------
echo
echo "contract checks against $BASE_URL:"
printf '  %s\n' "${SUMMARY[@]}"
exit "$FAILED"
