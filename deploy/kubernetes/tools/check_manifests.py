"""Checks for deploy/kubernetes/ that no schema covers; run by scripts/check-kubernetes.sh.

  check_manifests.py promql RULES_FILE... DOCS_FILE
      Parses every PrometheusRule expression with promql-parser (syntax and types, e.g.
      rate() of a non-range vector), every `for`/`keep_firing_for` as a Prometheus duration,
      and requires each metric an expression selects to be documented in DOCS_FILE, so a
      misspelt metric name (which PromQL accepts and which never fires) fails too.
  check_manifests.py config CONFIGMAP SECRET README
      Every env var of the README's configuration table is set in the ConfigMap or the
      Secret, or named in the ConfigMap's comment of optional settings.
  check_manifests.py json FILE...
      Prints [{"file", "resource"}, ...] for check-prometheus-operator.mjs.

Exits 1 on any finding, naming file, resource and rule.
"""
import json
import re
import sys

import promql_parser
import yaml


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def selected_metrics(expr):
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)

    promql_parser.walk(expr, pre_visit=visit)
    return names


def check_promql(rule_files, docs_path):
    with open(docs_path, encoding="utf-8") as f:
        documented = set(re.findall(r"`(orders_gateway_[a-z_]+)", f.read()))
    problems, count = [], 0
    for path in rule_files:
        for doc in documents(path):
            if doc.get("kind") != "PrometheusRule":
                continue
            for group in doc.get("spec", {}).get("groups", []):
                for rule in group.get("rules", []):
                    name = rule.get("alert") or rule.get("record") or "?"
                    where = f"{path}: {group.get('name')}/{name}"
                    count += 1
                    try:
                        expr = promql_parser.parse(str(rule.get("expr", "")))
                    except ValueError as e:
                        problems.append(f"{where}: expr: {e}")
                        continue
                    for metric in sorted(set(selected_metrics(expr))):
                        if metric not in documented:
                            problems.append(f"{where}: metric {metric} is not documented in {docs_path}")
                    for key in ("for", "keep_firing_for"):
                        if key in rule:
                            try:
                                promql_parser.parse_duration(str(rule[key]))
                            except ValueError as e:
                                problems.append(f"{where}: {key}: {e}")
    if count == 0:
        problems.append("no PrometheusRule rules found")
    return problems, f"{count} rule expressions parsed"


def check_config(configmap_path, secret_path, readme_path):
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", section, flags=re.M)
    configmap = documents(configmap_path)[0]
    secret = documents(secret_path)[0]
    keys = set(configmap.get("data", {})) | set(secret.get("stringData", {})) | set(secret.get("data", {}))
    with open(configmap_path, encoding="utf-8") as f:
        optional = set(re.findall(r"^\s*#\s+([A-Z][A-Z0-9_]*):", f.read(), flags=re.M))
    problems = [
        f"{configmap_path}: {var} (README configuration table) is neither set nor listed as optional"
        for var in table
        if var not in keys and var not in optional
    ]
    if not table:
        problems.append(f"{readme_path}: no configuration table found")
    return problems, f"{len(table)} settings of the README table covered"


def to_json(files):
    print(json.dumps([{"file": p, "resource": d} for p in files for d in documents(p)]))
    return [], None


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "promql":
        problems, summary = check_promql(args[:-1], args[-1])
    elif command == "config":
        problems, summary = check_config(*args)
    elif command == "json":
        problems, summary = to_json(args)
    else:
        sys.exit(f"unknown command {command}")
    for problem in problems:
        print(f"ERROR {problem}")
    if summary and not problems:
        print(f"ok    {summary}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
