//! The committed OpenAPI document must be exactly what the code generates and serves.

#![allow(clippy::unwrap_used)]

use orders_gateway::http::docs::openapi_json;

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == openapi_json(),
        "openapi/openapi.json is out of date with the code. Regenerate it with:\n\n    \
         cargo run -- openapi > openapi/openapi.json\n"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/orders",
        "/orders/stream",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let post = &doc["paths"]["/orders"]["post"]["responses"];
    for status in ["202", "400", "413", "415", "422", "503"] {
        assert!(post[status].is_object(), "POST /orders documents {status}");
    }
}
