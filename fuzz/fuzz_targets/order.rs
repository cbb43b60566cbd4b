//! Fuzz target: a request body as POST /orders reads it (`Order::from_json`, whose plain fast
//! path must agree with the full check `Order::parse`), and an accepted order's record value
//! as the tracker reads it back.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use orders_gateway::domain::order::{ITEM_MAX_CHARS, QUANTITY_MAX, USER_MAX_CHARS, rfc3339};
use orders_gateway::domain::{Order, Rejected, TrackedOrder};
use serde_json::Value;
use uuid::Uuid;

/// A fixed clock keeps every run reproducible from its input alone.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_166_282_123)
}

fn valid_text(s: &str, max_chars: usize) -> bool {
    let chars = s.chars().count();
    (1..=max_chars).contains(&chars) && !s.trim().is_empty() && !s.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    // An id for bodies without one, so both ways of reading make the same order.
    let fallback = Uuid::from_u128(0x6f1c_1e1e_0c1a_4a8e_9d4e_6f0b_5d8f_3c2a);
    let read = Order::from_json(data, now(), Some(fallback));
    let Ok(mut body) = serde_json::from_slice::<Value>(data) else {
        assert!(matches!(read, Err(Rejected::Malformed(_))), "{read:?}");
        return;
    };
    if let Value::Object(fields) = &mut body
        && fields.get("order_id").is_none_or(Value::is_null)
    {
        fields.insert("order_id".into(), fallback.to_string().into());
    }
    assert_eq!(
        read,
        Order::parse(body.clone(), now()).map_err(Rejected::Invalid),
        "the fast path and the full check disagree"
    );
    let sent_id = body
        .get("order_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let order = match Order::parse(body, now()) {
        Ok(order) => order,
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without a reason");
            let mut named = BTreeSet::new();
            for e in &errors {
                // `field` may be "": an unknown key is named as sent, and JSON allows "".
                assert!(!e.message.is_empty(), "{e:?}");
                assert!(named.insert(e.field.as_str()), "{} reported twice", e.field);
            }
            return;
        }
    };

    assert!(valid_text(&order.user, USER_MAX_CHARS), "{:?}", order.user);
    assert!(valid_text(&order.item, ITEM_MAX_CHARS), "{:?}", order.item);
    assert!((1..=QUANTITY_MAX).contains(&u64::from(order.quantity)));
    assert_eq!(order.created_at, rfc3339(now()));
    assert_eq!(order.accepted_at, now());
    if let Some(id) = sent_id {
        assert!(id.eq_ignore_ascii_case(&order.order_id.to_string()), "{id}");
    }

    // The record value names the same order: sent back as a body (less the gateway's own
    // created_at) it parses to an equal order.
    let json = order.json().to_vec();
    let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(&json) else {
        panic!("record value is not a JSON object: {json:?}");
    };
    assert_eq!(
        record.remove("created_at"),
        Some(Value::String(order.created_at.clone()))
    );
    assert_eq!(
        Order::parse(Value::Object(record), now()),
        Ok(order.clone())
    );

    // What the gateway publishes, its tracker must read as an order, not as poison.
    let tracked = match TrackedOrder::from_record(&json, 0, 0, now()) {
        Ok(tracked) => tracked,
        Err(error) => panic!("own record is poison: {error}"),
    };
    assert_eq!(tracked.order_id, order.order_id.to_string());
    assert_eq!(
        (
            tracked.user.as_str(),
            tracked.item.as_str(),
            tracked.quantity
        ),
        (order.user.as_str(), order.item.as_str(), order.quantity)
    );
    assert_eq!(
        tracked.created_at.as_deref(),
        Some(order.created_at.as_str())
    );
});
