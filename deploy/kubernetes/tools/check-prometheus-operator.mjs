// Validates ServiceMonitor and PrometheusRule resources with the validators that
// @kubernetes-models/prometheus-operator generates from the operator's API schema (types,
// required fields, enums, duration patterns). It does not reject unknown fields: that is
// crd-check's part (scripts/check-kubernetes.sh runs both).
//
// Input on stdin: JSON [{"file": "...", "resource": {...}}, ...] (the YAML parsed by the
// script's Python). Exit 1 if any resource fails or is of a kind not covered here.
import { readFileSync } from "node:fs";
import {
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PrometheusRule, ServiceMonitor };
let failures = 0;
for (const { file, resource } of JSON.parse(readFileSync(0, "utf8"))) {
  const id = `${resource.kind}/${resource.metadata?.name ?? "?"}`;
  const Model = resource.apiVersion === "monitoring.coreos.com/v1" ? models[resource.kind] : undefined;
  if (!Model) {
    console.log(`ERROR ${file}: ${id}: no schema for ${resource.apiVersion} ${resource.kind}`);
    failures++;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok    ${file}: ${id}`);
  } catch (error) {
    console.log(`ERROR ${file}: ${id}: ${error.message}`);
    failures++;
  }
}
process.exit(failures === 0 ? 0 : 1);
