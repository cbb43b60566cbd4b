//! Fuzz target: a record as the tracker and the replay read it from the topic. Any producer
//! can write there, so the value and the record's CreateTime are both untrusted.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use orders_gateway::domain::TrackedOrder;
use orders_gateway::domain::order::millis;

fuzz_target!(|input: (i64, &[u8])| {
    let (timestamp_ms, value) = input;
    // As the tracker converts a Kafka timestamp: negative means none, and it uses its clock.
    let when = u64::try_from(timestamp_ms).map_or(SystemTime::UNIX_EPOCH, |ms| {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    });
    let Ok(tracked) = TrackedOrder::from_record(value, 3, 42, when) else {
        return;
    };
    assert_eq!((tracked.partition, tracked.offset), (3, 42));
    assert_eq!(tracked.at, when);
    assert_eq!(tracked.stamp(), millis(when));
    // The stream sends it to clients as JSON.
    assert!(serde_json::to_vec(&tracked).is_ok());
});
