//! Validates custom resources against the kopium-generated types of their CRDs.
//!
//! `crd-check FILE...` reads every YAML document of every file and fails (exit 1) when a
//! document
//! - is of a kind this tool has no types for (so nothing passes unchecked),
//! - has a field the CRD does not define (what `kubectl apply --validate=strict` rejects),
//! - lacks a field the CRD requires, or has a value of the wrong type or outside an enum.
//!
//! Not checked, because the generated types do not carry them: numeric bounds, string
//! patterns and formats, CEL rules (x-kubernetes-validations) and enums on list items
//! (except Strimzi's ACL `operations`, checked below against the enum of `operation`).

use std::process::ExitCode;

use kcr_kafka_strimzi_io::v1beta2::kafkatopics::KafkaTopic;
use kcr_kafka_strimzi_io::v1beta2::kafkausers::{KafkaUser, KafkaUserAuthorizationAclsOperation};
use kcr_monitoring_coreos_com::v1::prometheusrules::PrometheusRule;
use kcr_monitoring_coreos_com::v1::servicemonitors::ServiceMonitor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: crd-check FILE...");
        return ExitCode::from(2);
    }
    let mut failures = 0;
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("ERROR {file}: {e}");
                failures += 1;
                continue;
            }
        };
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = match Value::deserialize(document) {
                Ok(Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    println!("ERROR {file}: not YAML: {e}");
                    failures += 1;
                    break;
                }
            };
            let id = describe(&value);
            let problems = check_document(value);
            if problems.is_empty() {
                println!("ok    {file}: {id}");
            } else {
                failures += 1;
                for problem in problems {
                    println!("ERROR {file}: {id}: {problem}");
                }
            }
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_document(value: Value) -> Vec<String> {
    let api_version = text(&value, "apiVersion");
    let kind = text(&value, "kind");
    match (api_version.as_str(), kind.as_str()) {
        ("kafka.strimzi.io/v1beta2", "KafkaTopic") => check::<KafkaTopic>(value),
        ("kafka.strimzi.io/v1beta2", "KafkaUser") => {
            let mut problems = acl_operations(&value);
            problems.extend(check::<KafkaUser>(value));
            problems
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => check::<PrometheusRule>(value),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => check::<ServiceMonitor>(value),
        _ => vec![format!(
            "no CRD types for apiVersion {api_version:?} kind {kind:?}"
        )],
    }
}

/// Deserializes into the generated type, collecting every field the type ignored.
fn check<T: DeserializeOwned>(value: Value) -> Vec<String> {
    let mut problems = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(value, |path| {
        let path = path.to_string();
        // Dispatched on above; the generated root types leave them to kube's traits.
        if path != "apiVersion" && path != "kind" {
            problems.push(format!("unknown field {}", tidy(&path)));
        }
    });
    if let Err(e) = result {
        problems.push(e.to_string());
    }
    problems
}

/// The CRD lists the same operations for `operations` items as for the deprecated single
/// `operation`, whose enum the generated type keeps; items of `operations` are plain strings.
fn acl_operations(user: &Value) -> Vec<String> {
    let acls = user
        .get("spec")
        .and_then(|s| s.get("authorization"))
        .and_then(|a| a.get("acls"))
        .and_then(Value::as_sequence);
    let mut problems = Vec::new();
    for (i, acl) in acls.into_iter().flatten().enumerate() {
        let operations = acl.get("operations").and_then(Value::as_sequence);
        for operation in operations.into_iter().flatten() {
            if serde_yaml::from_value::<KafkaUserAuthorizationAclsOperation>(operation.clone())
                .is_err()
            {
                let shown = operation
                    .as_str()
                    .map_or_else(|| format!("{operation:?}"), str::to_owned);
                problems.push(format!(
                    "spec.authorization.acls[{i}].operations: {shown:?} is not one of \
                     Read, Write, Create, Delete, Alter, Describe, ClusterAction, AlterConfigs, \
                     DescribeConfigs, IdempotentWrite, All"
                ));
            }
        }
    }
    problems
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn describe(value: &Value) -> String {
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{}/{name}", text(value, "kind"))
}

/// serde_ignored writes list positions as `?.0`: show them as `[0]`.
fn tidy(path: &str) -> String {
    let mut out = String::new();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if part == "?" {
            if let Some(index) = parts.next() {
                out.push_str(&format!("[{index}]"));
            }
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}
