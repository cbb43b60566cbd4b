#!/usr/bin/env bash
# The load harness (bench/README.md): one machine, a local Tansu broker, the release build of
# the gateway. Prints a table, writes JSON + markdown + a PNG plot.
#
#   bash scripts/bench.sh            full run (~5 min) -> bench/results/full.{json,md,png}
#   bash scripts/bench.sh --quick    < 2 min           -> target/bench-results/quick.*
#   bash scripts/bench.sh --soak 10  10-minute soak    -> target/bench-results/soak.*
#   bash scripts/bench.sh --baseline REV
#                                    also measures the gateway built from git revision REV
#                                    (the produce path and 10k streams) in the same run, and
#                                    adds a before/after table; the committed full run used
#                                    --baseline 917cf6e (the code before issue 11)
#
# Installs Tansu (.tools/tansu) and a Python venv with matplotlib (.tools/bench-venv), both
# git-ignored. Exits non-zero when an acknowledged order was lost or duplicated, a stream
# client silently missed an order, or a scenario measured nothing (targets are reported,
# not enforced: the machine is shared).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

matplotlib=3.10.9
out="$root/bench/results"
name=full
baseline=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) out="$root/target/bench-results"; name=quick; args+=(--quick) ;;
    --soak) out="$root/target/bench-results"; name=soak; args+=(--soak "$2"); shift ;;
    --out) out="$2"; shift ;;
    --name) name="$2"; shift ;;
    --baseline) baseline="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
mkdir -p "$out"

TANSU_BIN=$(bash scripts/install-tansu.sh)
export TANSU_BIN

venv="$root/.tools/bench-venv"
if [ "$(cat "$venv/MATPLOTLIB" 2>/dev/null)" != "$matplotlib" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$matplotlib" >&2
  echo "$matplotlib" > "$venv/MATPLOTLIB"
fi

if [ -n "$baseline" ]; then
  # The baseline's own checkout and target dir, so neither build disturbs the other.
  rev=$(git rev-parse --short "$baseline")
  bin="$root/target/baseline/$rev/orders-gateway"
  if [ ! -x "$bin" ]; then
    src="$root/target/baseline/src-$rev"
    rm -rf "$src"
    git worktree prune
    git worktree add --detach --force "$src" "$rev" >&2
    CARGO_TARGET_DIR="$root/target/baseline/build" \
      cargo build --locked --release --bin orders-gateway --manifest-path "$src/Cargo.toml" >&2
    mkdir -p "$(dirname "$bin")"
    cp "$root/target/baseline/build/release/orders-gateway" "$bin.tmp" && mv "$bin.tmp" "$bin"
    git worktree remove --force "$src"
  fi
  export BENCH_BASELINE_BIN="$bin" BENCH_BASELINE_REV="$rev"
fi

cargo bench --locked --bench gateway --no-run >&2
start=$(date +%s)
cargo bench --locked --bench gateway -- --out "$out" --name "$name" "${args[@]}"
"$venv/bin/python" bench/plot.py "$out/$name.json" "$out/$name.png"
echo "bench: $name done in $(( $(date +%s) - start )) s (build excluded); results in $out" >&2
