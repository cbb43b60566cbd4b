//! Orders: the wire shape a client sends, the valid `Order` we publish, and the
//! `TrackedOrder` the tracker reads back from the topic.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Limits of the fields a client sends; the OpenAPI schema repeats them.
pub const USER_MAX_CHARS: usize = 64;
pub const ITEM_MAX_CHARS: usize = 128;
pub const QUANTITY_MAX: u64 = 1000;

/// A new order as a client sends it (the shape the original `producer.py` sent).
///
/// The `pattern` of `user` and `item` says in ECMA-262/Python regex syntax what the gateway
/// checks: no control characters, at least one character that is not whitespace.
///
/// Unknown fields are rejected with 422 rather than dropped, so a typo such as
/// `"quantiy"` cannot silently place a different order than the one meant.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "lara", "item": "frozen yogurt", "quantity": 10}))]
pub struct NewOrder {
    /// Client-chosen id: a UUID in its hyphenated form. Absent or null: the gateway assigns
    /// a random UUID v4. Choosing it yourself makes a retry after a timeout recognisable
    /// downstream.
    #[schema(format = Uuid, example = "6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a",
             pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub order_id: Option<String>,
    /// Who places the order: 1 to 64 characters, not only whitespace, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        example = "lara"
    )]
    pub user: String,
    /// What is ordered: 1 to 128 characters, not only whitespace, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        example = "frozen yogurt"
    )]
    pub item: String,
    /// How many: an integer from 1 to 1000. As in JSON Schema, `10.0` and `1e1` are the
    /// integer 10; `10.5` is not an integer.
    #[schema(minimum = 1, maximum = 1000, example = 10)]
    pub quantity: u32,
}

/// A valid order, ready to publish. It can only be built by [`Order::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    /// The order's id; also the Kafka record key, so one order's events stay in order.
    #[schema(format = Uuid)]
    pub order_id: Uuid,
    pub user: String,
    pub item: String,
    pub quantity: u32,
    /// When the gateway accepted the order (RFC 3339, UTC).
    #[schema(example = "2026-11-26T14:11:22.123Z")]
    pub created_at: String,
    /// `created_at` as a point in time, for the record timestamp.
    #[serde(skip)]
    pub accepted_at: SystemTime,
}

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name (`body` when the body as a whole is wrong).
    pub field: String,
    /// What is wrong with it, in words a person can act on.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl Order {
    /// Checks a parsed JSON body field by field and reports every problem at once, which
    /// a typed `serde` parse cannot do (it stops at the first error).
    pub fn parse(body: Value, now: SystemTime) -> Result<Self, Vec<FieldError>> {
        let Value::Object(mut fields) = body else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let order_id = take_order_id(&mut fields, &mut errors);
        let user = take_text(&mut fields, "user", USER_MAX_CHARS, &mut errors);
        let item = take_text(&mut fields, "item", ITEM_MAX_CHARS, &mut errors);
        let quantity = take_quantity(&mut fields, &mut errors);
        let mut unknown: Vec<_> = fields.keys().cloned().collect();
        unknown.sort();
        errors.extend(
            unknown
                .iter()
                .map(|name| FieldError::new(name, "unknown field")),
        );

        match (order_id, user, item, quantity) {
            (Some(order_id), Some(user), Some(item), Some(quantity)) if errors.is_empty() => {
                Ok(Self {
                    order_id,
                    user,
                    item,
                    quantity,
                    created_at: rfc3339(now),
                    accepted_at: now,
                })
            }
            _ => Err(errors),
        }
    }

    /// The record value: the order as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn take_order_id(fields: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    match fields.remove("order_id") {
        None | Some(Value::Null) => Some(Uuid::new_v4()),
        // Only the hyphenated form, as the schema says; `Uuid` alone would also take
        // braces, `urn:uuid:` and bare hex.
        Some(Value::String(s)) => match Uuid::try_parse(&s) {
            Ok(id) if s.len() == 36 => Some(id),
            _ => {
                errors.push(FieldError::new(
                    "order_id",
                    "must be a UUID like 6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("order_id", "must be a UUID string"));
            None
        }
    }
}

fn take_text(
    fields: &mut Map<String, Value>,
    name: &str,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let message = match fields.remove(name) {
        None | Some(Value::Null) => "is required".to_owned(),
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if s.chars().all(is_blank) {
                "must not be empty or only whitespace".to_owned()
            } else if chars > max_chars {
                format!("must be at most {max_chars} characters (got {chars})")
            } else if s.chars().any(char::is_control) {
                "must not contain control characters".to_owned()
            } else {
                return Some(s);
            }
        }
        Some(_) => "must be a string".to_owned(),
    };
    errors.push(FieldError::new(name, message));
    None
}

fn take_quantity(fields: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<u32> {
    let range = format!("must be an integer from 1 to {QUANTITY_MAX}");
    let message = match fields.remove("quantity") {
        None | Some(Value::Null) => "is required".to_owned(),
        Some(Value::Number(n)) => match whole_number(&n) {
            Some(q @ 1..=QUANTITY_MAX) => return u32::try_from(q).ok(),
            _ => range,
        },
        Some(_) => range,
    };
    errors.push(FieldError::new("quantity", message));
    None
}

/// JSON (and JSON Schema's `integer`) does not tell `10` from `10.0` or `1e1`; neither do
/// we, so the documented schema is exactly what is accepted.
fn whole_number(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        // Beyond 2^53 a float is no exact count of anything; such a quantity is out of
        // range anyway.
        (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
    })
}

/// Whitespace as the schema's `\s` means it (ECMAScript), which also counts U+FEFF; Rust's
/// `char::is_whitespace` does not, and the two must agree on what is blank.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// An order read back from the topic, with where it was found.
///
/// Records written by other producers (the original `producer.py`, kafka-console-producer)
/// are tracked too, so this is more lenient than [`Order`]: any string id, `created_at`
/// optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrackedOrder {
    pub order_id: String,
    pub user: String,
    pub item: String,
    pub quantity: u32,
    /// Present when the producer set it (the gateway always does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Partition the record is on.
    pub partition: i32,
    /// Offset of the record within its partition.
    pub offset: i64,
    /// The record's timestamp (RFC 3339, UTC).
    pub timestamp: String,
    /// The record's timestamp as a point in time, for `since` replays.
    #[serde(skip)]
    pub at: SystemTime,
}

/// Why a record on the topic is not tracked as an order (a poison record).
#[derive(Debug, thiserror::Error)]
pub enum PoisonRecord {
    #[error("{0} bytes, more than any order ({MAX_RECORD_BYTES} at most)")]
    TooLarge(usize),
    #[error("not an order: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("`{0}` is longer than {1} bytes")]
    FieldTooLong(&'static str, usize),
}

/// Bounds on what the tracker accepts from other producers: every order the gateway writes
/// fits (its limits in characters, times four bytes of UTF-8), and a record far beyond
/// them would be copied to every stream client.
const MAX_RECORD_BYTES: usize = 16 * 1024;
const MAX_FIELD_BYTES: [(&str, usize); 3] = [("order_id", 128), ("user", 256), ("item", 512)];

#[derive(Deserialize)]
struct RecordValue {
    order_id: String,
    user: String,
    item: String,
    quantity: u32,
    #[serde(default)]
    created_at: Option<String>,
}

impl TrackedOrder {
    /// The record's timestamp in milliseconds, as stream positions keep it.
    pub fn stamp(&self) -> i64 {
        millis(self.at)
    }

    /// Reads a record value; `Err` names why it is not an order (a poison record).
    pub fn from_record(
        value: &[u8],
        partition: i32,
        offset: i64,
        timestamp: SystemTime,
    ) -> Result<Self, PoisonRecord> {
        if value.len() > MAX_RECORD_BYTES {
            return Err(PoisonRecord::TooLarge(value.len()));
        }
        let v: RecordValue = serde_json::from_slice(value)?;
        for ((field, max), len) in
            MAX_FIELD_BYTES
                .into_iter()
                .zip([v.order_id.len(), v.user.len(), v.item.len()])
        {
            if len > max {
                return Err(PoisonRecord::FieldTooLong(field, max));
            }
        }
        Ok(Self {
            order_id: v.order_id,
            user: v.user,
            item: v.item,
            quantity: v.quantity,
            created_at: v.created_at,
            partition,
            offset,
            timestamp: rfc3339(timestamp),
            at: timestamp,
        })
    }
}

/// Milliseconds since the Unix epoch; 0 for anything earlier.
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, the precision of Kafka timestamps.
///
/// Times outside what humantime can write (1970 to 9999) are written as the nearest end of
/// that range: a record's timestamp is whatever its producer chose, and humantime's `Display`
/// fails past 9999, which `to_string` turns into a panic (found by fuzz target `record`).
pub fn rfc3339(t: SystemTime) -> String {
    let t = t.max(SystemTime::UNIX_EPOCH);
    let t = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(LAST_RFC3339_MILLIS))
        .map_or(t, |last| t.min(last));
    humantime::format_rfc3339_millis(t).to_string()
}

/// 9999-12-31T23:59:59.999Z, the last millisecond humantime formats.
const LAST_RFC3339_MILLIS: u64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Order, Vec<FieldError>> {
        Order::parse(body, SystemTime::UNIX_EPOCH)
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_valid_order_gets_an_id_and_a_creation_time() {
        let order =
            parse(json!({"user": "lara", "item": "frozen yogurt", "quantity": 10})).unwrap();
        assert_eq!(
            (order.user.as_str(), order.item.as_str(), order.quantity),
            ("lara", "frozen yogurt", 10)
        );
        assert_eq!(order.order_id.get_version_num(), 4);
        assert_eq!(order.created_at, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn only_hyphenated_uuids_are_order_ids() {
        for id in [
            "{6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a}",
            "6f1c1e1e0c1a4a8e9d4e6f0b5d8f3c2a",
            "urn:uuid:6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a",
        ] {
            let errors = parse(json!({"order_id": id, "user": "a", "item": "b", "quantity": 1}))
                .unwrap_err();
            assert_eq!(fields(&errors), ["order_id"], "{id}");
        }
    }

    #[test]
    fn a_client_chosen_order_id_is_kept() {
        let id = "6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a";
        let order =
            parse(json!({"order_id": id, "user": "a", "item": "b", "quantity": 1})).unwrap();
        assert_eq!(order.order_id.to_string(), id);
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let errors =
            parse(json!({"order_id": "nope", "user": "", "item": 7, "quantity": 0, "extra": 1}))
                .unwrap_err();
        assert_eq!(
            fields(&errors),
            ["order_id", "user", "item", "quantity", "extra"]
        );
    }

    #[test]
    fn missing_fields_are_required() {
        let errors = parse(json!({})).unwrap_err();
        assert_eq!(fields(&errors), ["user", "item", "quantity"]);
        assert!(errors.iter().all(|e| e.message == "is required"));
    }

    #[test]
    fn limits_are_inclusive_and_count_characters_not_bytes() {
        let at_limit = json!({"user": "é".repeat(64), "item": "x".repeat(128), "quantity": 1000});
        assert!(parse(at_limit).is_ok());
        let over = json!({"user": "é".repeat(65), "item": "x".repeat(129), "quantity": 1001});
        assert_eq!(
            fields(&parse(over).unwrap_err()),
            ["user", "item", "quantity"]
        );
    }

    #[test]
    fn whole_floats_are_integers_as_json_schema_says() {
        for (q, expected) in [(json!(10.0), 10), (json!(1e1), 10), (json!(1000.0), 1000)] {
            let order = parse(json!({"user": "a", "item": "b", "quantity": q})).unwrap();
            assert_eq!(order.quantity, expected, "{q}");
        }
    }

    #[test]
    fn quantity_must_be_an_integer_in_range() {
        for q in [
            json!(10.5),
            json!(1e4),
            json!(0.0),
            json!(-1),
            json!(1e300),
            json!("10"),
            json!(true),
            json!(u64::MAX),
        ] {
            let errors = parse(json!({"user": "a", "item": "b", "quantity": q})).unwrap_err();
            assert_eq!(fields(&errors), ["quantity"], "{q}");
        }
    }

    #[test]
    fn blank_and_control_characters_are_rejected() {
        let errors = parse(json!({"user": "   ", "item": "a\u{0}b", "quantity": 1})).unwrap_err();
        assert_eq!(fields(&errors), ["user", "item"]);
    }

    #[test]
    fn a_byte_order_mark_alone_is_blank_as_the_schema_says() {
        let errors = parse(json!({"user": "\u{feff} ", "item": "x", "quantity": 1})).unwrap_err();
        assert_eq!(fields(&errors), ["user"]);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_one_error() {
        for body in [json!([]), json!("order"), json!(null), json!(3)] {
            assert_eq!(fields(&parse(body).unwrap_err()), ["body"]);
        }
    }

    #[test]
    fn a_published_order_reads_back_as_tracked() {
        let order =
            parse(json!({"user": "lara", "item": "frozen yogurt", "quantity": 10})).unwrap();
        let tracked =
            TrackedOrder::from_record(&order.to_json(), 2, 41, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(tracked.order_id, order.order_id.to_string());
        assert_eq!(
            tracked.created_at.as_deref(),
            Some(order.created_at.as_str())
        );
        assert_eq!((tracked.partition, tracked.offset), (2, 41));
    }

    #[test]
    fn records_of_the_original_producer_are_tracked() {
        let value =
            br#"{"order_id": "abc", "user": "lara", "item": "frozen yogurt", "quantity": 10}"#;
        let tracked = TrackedOrder::from_record(value, 0, 0, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(tracked.created_at, None);
    }

    #[test]
    fn record_timestamps_past_year_9999_are_written_as_its_last_millisecond() {
        // The fuzz target `record` found this: a producer-chosen CreateTime in year 73381
        // made formatting the timestamp panic inside the tracker.
        let value =
            br#"{"order_id": "abc", "user": "lara", "item": "frozen yogurt", "quantity": 10}"#;
        let far = SystemTime::UNIX_EPOCH + Duration::from_millis(2_253_563_979_967_371);
        let tracked = TrackedOrder::from_record(value, 0, 0, far).unwrap();
        assert_eq!(tracked.timestamp, "9999-12-31T23:59:59.999Z");
        assert_eq!((tracked.at, tracked.stamp()), (far, 2_253_563_979_967_371));

        let at = |ms| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(at(253_402_300_800_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(at(u64::MAX / 2), "9999-12-31T23:59:59.999Z");
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(before_1970), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn poison_records_are_errors() {
        let long_user = format!(
            r#"{{"order_id": "a", "user": "{}", "item": "x", "quantity": 1}}"#,
            "u".repeat(257)
        );
        let huge = format!(r#"{{"pad": "{}"}}"#, "x".repeat(MAX_RECORD_BYTES));
        let values = [
            &b"not json"[..],
            b"{}",
            br#"{"user": 1}"#,
            b"[]",
            b"\xff\xfe",
            br#"{"order_id": "a", "user": "b", "item": "c", "quantity": 4294967296}"#,
            long_user.as_bytes(),
            huge.as_bytes(),
        ];
        for value in values {
            assert!(
                TrackedOrder::from_record(value, 0, 0, SystemTime::UNIX_EPOCH).is_err(),
                "{}",
                String::from_utf8_lossy(&value[..value.len().min(80)])
            );
        }
    }

    #[test]
    fn the_largest_order_the_gateway_accepts_is_tracked() {
        let order =
            parse(json!({"user": "ü".repeat(64), "item": "😀".repeat(128), "quantity": 1000}))
                .unwrap();
        assert!(TrackedOrder::from_record(&order.to_json(), 0, 0, SystemTime::UNIX_EPOCH).is_ok());
    }
}
