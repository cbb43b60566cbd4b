#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes/ without a cluster:
#   1. core resources (*.yaml in deploy/kubernetes/) against the Kubernetes API's JSON schemas
#      of 1.30 and 1.37, strict (unknown fields fail): kubernetes-validate, which bundles them
#   2. Strimzi KafkaTopic/KafkaUser and Prometheus Operator ServiceMonitor/PrometheusRule
#      against the types generated from those projects' CRDs (crd-check: Rust, kcr_* crates):
#      unknown fields, required fields, value types, enums
#   3. ServiceMonitor/PrometheusRule against @kubernetes-models/prometheus-operator's
#      validators (generated from the operator's API schema): also patterns such as durations
#   4. every alert expression parsed by promql-parser (syntax and types), durations parsed,
#      and each metric it selects documented in docs/operations.md
#   5. the ConfigMap + Secret cover every setting of the README's configuration table
#   6. self-check: every fixture in deploy/kubernetes/testdata/ must FAIL its validator with
#      the message its `# expect:` line names, so a validator that passes everything fails CI
#
# Tools are pinned and installed into .tools/kubernetes/ and .tools/py-kubernetes/
# (git-ignored) on first run: a Python venv, npm ci from deploy/kubernetes/tools/
# package-lock.json, and `cargo build --locked` of deploy/kubernetes/tools/crd-check (about
# 3 minutes the first time). Needs python3, node/npm and cargo. Runs from any directory.
# Exits non-zero on the first failing check.
set -euo pipefail

# Pinned tool versions. Changing one reinstalls the venv on the next run.
readonly KUBERNETES_VALIDATE_VERSION=1.37.0
readonly PROMQL_PARSER_VERSION=0.11.0
readonly PYYAML_VERSION=6.0.4
# Kubernetes versions the core manifests must be valid for: the oldest with the preStop
# sleep action on by default (beta, 1.30), and the newest the validator knows.
readonly KUBERNETES_VERSIONS="1.30.0 1.37.0"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifests="$root/deploy/kubernetes"
tools_src="$manifests/tools"
venv="$root/.tools/py-kubernetes"
node_dir="$root/.tools/kubernetes/node"
crd_target="$root/.tools/kubernetes/crd-check-target"
requirements="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION
promql-parser==$PROMQL_PARSER_VERSION
PyYAML==$PYYAML_VERSION"

log() { printf '==> %s\n' "$*"; }

ensure_venv() {
  local stamp="$venv/.installed"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$requirements" ]; then
    return
  fi
  log "installing pinned Python tools into ${venv#"$root"/}"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  local -a pip_args=(install --quiet --disable-pip-version-check --no-input)
  # shellcheck disable=SC2206 # one requirement per line, none contains spaces
  pip_args+=($requirements)
  if python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/python" -m pip "${pip_args[@]}"
  else
    # python3 without ensurepip (Debian without python3-venv): let the system pip install.
    rm -rf "$venv"
    python3 -m venv --without-pip "$venv"
    python3 -m pip --python "$venv/bin/python" "${pip_args[@]}"
  fi
  printf '%s' "$requirements" > "$stamp"
}

ensure_node_modules() {
  local stamp="$node_dir/.installed"
  local want
  want=$(cat "$tools_src/package.json" "$tools_src/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ -f "$node_dir/node_modules/@kubernetes-models/prometheus-operator/package.json" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "npm ci (deploy/kubernetes/tools/package-lock.json) into ${node_dir#"$root"/}"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$tools_src/package.json" "$tools_src/package-lock.json" "$node_dir/"
  # The package declares node >= 22 but runs on 20 (checked): keep npm's engine warning out.
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s' "$want" > "$stamp"
}

ensure_crd_check() {
  # cargo decides itself whether anything changed; --locked: exactly Cargo.lock's versions.
  if [ ! -x "$crd_target/debug/crd-check" ]; then
    log "building crd-check (first run: about 3 minutes)"
  fi
  CARGO_TARGET_DIR="$crd_target" cargo build --quiet --locked \
    --manifest-path "$tools_src/crd-check/Cargo.toml"
}

ensure_venv
ensure_node_modules
ensure_crd_check

python="$venv/bin/python"
kubernetes_validate="$venv/bin/kubernetes-validate"
crd_check="$crd_target/debug/crd-check"
node_check="$node_dir/check-prometheus-operator.mjs"
# The .mjs resolves its imports next to itself, so it runs from the install folder.
cp "$tools_src/check-prometheus-operator.mjs" "$node_check"

cd "$root"

# Runs one check: prints what it runs, then "ok", or "FAILED" and exits with its status.
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

# kubernetes-validate only warns (exit 0) for a kind it has no schema for: that is a failure
# here, so nothing passes unchecked. It reports the first error of each resource.
validate_core() {
  local version=$1
  shift
  local out rc=0
  out=$("$kubernetes_validate" --strict -k "$version" "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /'
  if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -qv '^INFO '; then
    return 1
  fi
}

validate_prometheus_operator() {
  "$python" "$tools_src/check_manifests.py" json "$@" | node "$node_check"
}

promql() { "$python" "$tools_src/check_manifests.py" promql "$@" docs/operations.md; }

# The core files: what `kubectl apply -f deploy/kubernetes/` applies (not recursive), and
# the Secret's template beside them.
core=(deploy/kubernetes/*.yaml deploy/kubernetes/secret-example/*.yaml)
strimzi=(deploy/kubernetes/strimzi/*.yaml)
prometheus=(deploy/kubernetes/prometheus-operator/*.yaml)

kv_version="kubernetes-validate $("$kubernetes_validate" --version 2>/dev/null | awk '{print $NF}')"
for version in $KUBERNETES_VERSIONS; do
  check "core manifests: $kv_version --strict, Kubernetes $version schemas" \
    validate_core "$version" "${core[@]}"
done
check "Strimzi and Prometheus Operator resources: crd-check (kcr_kafka_strimzi_io, kcr_monitoring_coreos_com types)" \
  "$crd_check" "${strimzi[@]}" "${prometheus[@]}"
check "Prometheus Operator resources: @kubernetes-models/prometheus-operator validators" \
  validate_prometheus_operator "${prometheus[@]}"
check "alert expressions: promql-parser $PROMQL_PARSER_VERSION, metrics documented in docs/operations.md" \
  promql "${prometheus[@]}"
check "configmap.yaml + secret-example/secret.yaml cover the README configuration table" \
  "$python" "$tools_src/check_manifests.py" config deploy/kubernetes/configmap.yaml \
  deploy/kubernetes/secret-example/secret.yaml README.md

# Self-check. A fixture's name says which validator must reject it:
#   core-*  kubernetes-validate   crd-*  crd-check   promop-*  the npm validators
#   promql-*  the PromQL check
# and its `# expect: TEXT` line what the rejection must say.
expect_failure() {
  local fixture=$1 expected out rc=0
  expected=$(sed -n 's/^# expect: //p' "$fixture" | head -n1)
  [ -n "$expected" ] || { echo "    $fixture has no '# expect:' line"; return 1; }
  case "$(basename "$fixture")" in
    core-*) out=$(validate_core "${KUBERNETES_VERSIONS##* }" "$fixture" 2>&1) || rc=$? ;;
    crd-*) out=$("$crd_check" "$fixture" 2>&1) || rc=$? ;;
    promop-*) out=$(validate_prometheus_operator "$fixture" 2>&1) || rc=$? ;;
    promql-*) out=$(promql "$fixture" 2>&1) || rc=$? ;;
    *) echo "    $fixture: unknown fixture prefix"; return 1 ;;
  esac
  if [ "$rc" -eq 0 ]; then
    echo "    $fixture PASSED validation but must fail"
    return 1
  fi
  if ! printf '%s\n' "$out" | grep -qF -- "$expected"; then
    printf '    %s failed, but without "%s":\n%s\n' "$fixture" "$expected" "$out"
    return 1
  fi
  printf '    rejected as expected: %s: %s\n' "${fixture#deploy/kubernetes/}" \
    "$(printf '%s\n' "$out" | grep -F -m1 -- "$expected" | sed 's/^ *//')"
}

self_check() {
  local fixture failed=0 count=0
  for fixture in deploy/kubernetes/testdata/*.yaml; do
    count=$((count + 1))
    expect_failure "$fixture" || failed=1
  done
  [ "$count" -gt 0 ] || { echo "    no fixtures in deploy/kubernetes/testdata/"; return 1; }
  return "$failed"
}
check "self-check: each broken fixture in deploy/kubernetes/testdata/ is rejected" self_check

log "all Kubernetes checks passed: core manifests (Kubernetes ${KUBERNETES_VERSIONS// /, }), CRD resources, PromQL, configuration coverage, self-check"
