#!/usr/bin/env bash
# The live page in a real browser: headless Debian Chromium + playwright-core under node --test.
#
#   scripts/check-browser.sh
#
# Installs what is missing (Chromium from apt, node_modules from package-lock.json), builds the
# gateway (cargo build, debug) unless GATEWAY_BIN names a binary, then runs tests/browser/.
# The tests start their own embedded-mode gateway on a free loopback port (TEST_PORTS=FROM-TO
# narrows the choice). Screenshots and the gateway's log go to test-results/. A second run
# installs nothing and its build is a no-op.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v chromium >/dev/null; then
    log "installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

command -v npm >/dev/null || { echo "npm is not installed (Node 20+ needed)" >&2; exit 1; }
# npm ci when node_modules is missing or older than package-lock.json. The stamp is the one
# check-contract.sh keeps, so either script's install serves the other.
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
have=""
[[ -f node_modules/.contract-stamp ]] && have="$(cat node_modules/.contract-stamp)"
if [[ "$want" != "$have" || ! -f node_modules/playwright-core/package.json ]]; then
    log "npm ci (node_modules missing or older than package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$want" >node_modules/.contract-stamp
fi

# The page is compiled into the gateway (include_str!), so the binary must be current: build
# it unless GATEWAY_BIN names one (a no-op when nothing changed).
if [[ -z "${GATEWAY_BIN:-}" ]]; then
    log "cargo build (the gateway serves the page)"
    cargo build --locked --bins --quiet
elif [[ ! -x "$GATEWAY_BIN" ]]; then
    echo "GATEWAY_BIN=$GATEWAY_BIN is not an executable file" >&2
    exit 1
fi

mkdir -p test-results
log "node --test tests/browser/"
node --test --test-reporter=spec tests/browser/
