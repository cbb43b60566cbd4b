//! Fuzz target: a Last-Event-ID as the stream handler reads it, then `Position::decode`.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use orders_gateway::domain::Position;

const TOPIC: &str = "orders";

/// Whatever decodes is exactly what `encode` writes: one spelling per position.
fn check(id: &str) {
    let Ok(position) = Position::decode(id, TOPIC) else {
        return;
    };
    assert_eq!(position.encode(TOPIC), id);
    assert_eq!(Position::decode(id, TOPIC).as_ref(), Ok(&position));
    for (partition, next) in position.iter() {
        assert!(partition >= 0 && next >= 0, "{partition}:{next}");
        assert_eq!(position.next_offset(partition), Some(next));
        assert!(position.stamp(partition).is_none_or(|s| s > 0));
    }
    let _ = position.to_string();
}

fuzz_target!(|data: &[u8]| {
    // As sent: any text, most of it not even base64.
    if let Ok(id) = std::str::from_utf8(data) {
        check(id);
    }
    // As decoded bytes: reaches the varint layer without first having to find base64.
    check(&URL_SAFE_NO_PAD.encode(data));
});
