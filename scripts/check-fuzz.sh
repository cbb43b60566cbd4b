#!/usr/bin/env bash
# Fuzz smoke test: every cargo-fuzz target in fuzz/ runs for FUZZ_SECONDS over its committed
# corpus (fuzz/corpus/<target>/). Any crash, panic, timeout or out-of-memory fails the script;
# the input that did it is kept in fuzz/artifacts/<target>/ and the command to replay it is
# printed.
#
#   scripts/check-fuzz.sh [TARGET...]      default: every target `cargo fuzz list` names
#
# Installs the pinned cargo-fuzz into .tools/cargo-fuzz (git-ignored) unless it is already
# there. Builds with optimisations, debug assertions and overflow checks, without
# AddressSanitizer (`-s none`): that needs a nightly compiler, and the code under test is
# safe Rust (`unsafe_code` is denied), so stable Rust is enough.
#
# New inputs that a run finds go to fuzz/target/check-corpus/<target>/, not into the
# committed corpus; to keep them, see fuzz/README.md (cargo fuzz cmin).
#
# Environment knobs:
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

CARGO_FUZZ_VERSION=0.13.2
TOOLS="$ROOT/.tools/cargo-fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
BIN_DIR="$ROOT/fuzz/target/x86_64-unknown-linux-gnu/release"

log() { printf '==> %s\n' "$*" >&2; }

if [[ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/cargo-fuzz"
    cargo install --locked --quiet --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" cargo-fuzz
fi
export PATH="$TOOLS/bin:$PATH"

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

log "building fuzz targets: ${targets[*]}"
# cargo fuzz has no --locked; fetching with it first fails if fuzz/Cargo.lock is stale.
cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml
cargo fuzz build -O -s none

passed=0
failed=0
for target in "${targets[@]}"; do
    scratch="$ROOT/fuzz/target/check-corpus/$target"
    artifacts="$ROOT/fuzz/artifacts/$target"
    output="$ROOT/fuzz/target/check-$target.log"
    started="$ROOT/fuzz/target/check-$target.started"
    mkdir -p "$scratch" "$artifacts"
    touch "$started"
    log "fuzzing $target for ${SECONDS_PER_TARGET}s"
    # The scratch folder comes first: libFuzzer writes new inputs only to its first corpus.
    if "$BIN_DIR/$target" -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$scratch" "$ROOT/fuzz/corpus/$target" >"$output" 2>&1; then
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$output")"
        rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$output")"
        echo "check-fuzz: $target ok: ${execs:-?} inputs in ${SECONDS_PER_TARGET}s (${rate:-?}/s)"
        passed=$((passed + 1))
    else
        tail -n 60 "$output" >&2
        echo "check-fuzz: $target FAILED; full log: fuzz/target/check-$target.log"
        find "$artifacts" -type f -newer "$started" -printf \
            "check-fuzz:   replay: PATH=.tools/cargo-fuzz/bin:\$PATH cargo fuzz run -O -s none $target fuzz/artifacts/$target/%f\n"
        failed=$((failed + 1))
    fi
done

echo "check-fuzz: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
