#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test.
#
#   1. unit, router and integration tests (cargo test; integration tests start their own
#      Tansu broker processes on free loopback ports)
#   2. deployment checks: compose file parsed and validated, Dockerfile linted
#   3. contract checks against a live gateway on a real broker: OpenAPI validation,
#      httpyac (.http files), newman (Postman collection), schemathesis
#   4. the live page in a real browser (Debian Chromium + playwright-core, node --test)
#   5. supply chain: cargo-deny (licenses, bans, sources; advisories when reachable)
#   6. fuzz targets: a short pass of each over its committed corpus (cargo-fuzz)
#   7. the load harness in quick mode (bench/README.md): checks it runs and measures, and
#      that no acknowledged order is lost or doubled; speed targets are reported, not enforced
#
# Everything is installed into project-local, git-ignored folders (.tools/, node_modules/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

step() { printf '\n==== %s\n' "$*"; }

step "test broker (Tansu)"
TANSU_BIN=$(bash scripts/install-tansu.sh)
export TANSU_BIN

step "cargo test"
cargo build --locked --bins
cargo test --locked --all-targets

step "deployment checks"
bash scripts/check-deploy.sh

step "contract checks against a live gateway"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
logs="$root/test-results/logs"
mkdir -p "$logs"
broker_port=$(free_port)
gateway_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$broker_port" \
  --advertised-listener-url "tcp://127.0.0.1:$broker_port" >"$logs/tansu.log" 2>&1 &
pids+=($!)
KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$broker_port" LISTEN_ADDR="127.0.0.1:$gateway_port" \
  RUST_LOG=warn target/debug/orders-gateway >"$logs/gateway.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$gateway_port"
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "$base/readyz" || { echo "gateway not ready; see $logs" >&2; exit 1; }
bash scripts/check-contract.sh "$base"

step "the live page in a real browser"
GATEWAY_BIN="$root/target/debug/orders-gateway" bash scripts/check-browser.sh

step "supply chain (cargo-deny)"
bash scripts/check-deps.sh

step "fuzz targets (${FUZZ_SECONDS:-30} s each over the committed corpus)"
bash scripts/check-fuzz.sh

step "load harness, quick mode (bench/README.md)"
bash scripts/bench.sh --quick

step "all tests passed"
