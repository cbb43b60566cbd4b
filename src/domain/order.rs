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

// Built only by `Order::from_json` and `Order::parse`, which check every field.
/// A valid order, ready to publish.
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
    /// The record value, written once when the order is accepted: the producer sends it
    /// and the 202 repeats it.
    #[serde(skip)]
    json: Box<[u8]>,
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

/// Why a request body is not an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not JSON at all; the parser's words.
    Malformed(String),
    /// JSON, but not a valid order: every invalid field.
    Invalid(Vec<FieldError>),
}

/// The body of a valid order as it usually arrives: read straight into its fields, with
/// no tree of JSON values in between. Anything else (an error, a float quantity, an
/// escaped id, a repeated key) goes the long way through [`Order::parse`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain<'a> {
    #[serde(default, borrow)]
    order_id: Option<&'a str>,
    user: String,
    item: String,
    quantity: u32,
}

impl Order {
    /// Reads a request body. `default_id` is the order id to use when the body has none
    /// (derived from an Idempotency-Key); without it a random one is made.
    ///
    /// A valid body in its plain form is read straight into the order; any other body
    /// takes the long way through [`Order::parse`], which names every problem. Both ways
    /// accept exactly the same orders (a test and the fuzz target `order` check it).
    pub fn from_json(
        body: &[u8],
        now: SystemTime,
        default_id: Option<Uuid>,
    ) -> Result<Self, Rejected> {
        if let Some(order) = Self::from_plain(body, now, default_id) {
            return Ok(order);
        }
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if let (Some(id), Value::Object(fields)) = (default_id, &mut value)
            && fields.get("order_id").is_none_or(Value::is_null)
        {
            fields.insert("order_id".into(), id.to_string().into());
        }
        Self::parse(value, now).map_err(Rejected::Invalid)
    }

    fn from_plain(body: &[u8], now: SystemTime, default_id: Option<Uuid>) -> Option<Self> {
        let plain: Plain<'_> = serde_json::from_slice(body).ok()?;
        let valid = text_problem(&plain.user, USER_MAX_CHARS).is_none()
            && text_problem(&plain.item, ITEM_MAX_CHARS).is_none()
            && (1..=QUANTITY_MAX).contains(&u64::from(plain.quantity));
        if !valid {
            return None;
        }
        let order_id = match plain.order_id {
            Some(id) => hyphenated_uuid(id)?,
            None => default_id.unwrap_or_else(Uuid::new_v4),
        };
        Some(Self::new(
            order_id,
            plain.user,
            plain.item,
            plain.quantity,
            now,
        ))
    }

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
                Ok(Self::new(order_id, user, item, quantity, now))
            }
            _ => Err(errors),
        }
    }

    fn new(order_id: Uuid, user: String, item: String, quantity: u32, now: SystemTime) -> Self {
        let mut order = Self {
            order_id,
            user,
            item,
            quantity,
            created_at: rfc3339(now),
            accepted_at: now,
            json: Box::default(),
        };
        // Field names, the id, the quantity and the time take under 100 bytes.
        let mut json = Vec::with_capacity(100 + order.user.len() + order.item.len());
        // Serialising a struct of strings and integers into memory cannot fail.
        let _ = serde_json::to_writer(&mut json, &order);
        order.json = json.into_boxed_slice();
        order
    }

    /// The record value: the order as JSON (`order_id`, `user`, `item`, `quantity`,
    /// `created_at`).
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// Only the hyphenated form, as the schema says; `Uuid` alone would also take braces,
/// `urn:uuid:` and bare hex.
fn hyphenated_uuid(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s).ok().filter(|_| s.len() == 36)
}

fn take_order_id(fields: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    match fields.remove("order_id") {
        None | Some(Value::Null) => Some(Uuid::new_v4()),
        Some(Value::String(s)) => match hyphenated_uuid(&s) {
            Some(id) => Some(id),
            None => {
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
        Some(Value::String(s)) => match text_problem(&s, max_chars) {
            None => return Some(s),
            Some(problem) => problem,
        },
        Some(_) => "must be a string".to_owned(),
    };
    errors.push(FieldError::new(name, message));
    None
}

/// What is wrong with a `user` or `item` text, if anything.
fn text_problem(s: &str, max_chars: usize) -> Option<String> {
    if s.chars().all(is_blank) {
        return Some("must not be empty or only whitespace".to_owned());
    }
    let chars = s.chars().count();
    if chars > max_chars {
        Some(format!(
            "must be at most {max_chars} characters (got {chars})"
        ))
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
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
    humantime::format_rfc3339_millis(clamped(t)).to_string()
}

/// [`rfc3339`] appended to `out`, without a String of its own.
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    use std::io::Write;
    // Writing into memory cannot fail, and the clamp keeps `Display` within its range.
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(clamped(t)));
}

fn clamped(t: SystemTime) -> SystemTime {
    let t = t.max(SystemTime::UNIX_EPOCH);
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(LAST_RFC3339_MILLIS))
        .map_or(t, |last| t.min(last))
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

    /// What `from_json` must answer: exactly what the full check says of the same body.
    fn full_check(body: &[u8], id: Uuid) -> Result<Order, Rejected> {
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if let Value::Object(fields) = &mut value
            && fields.get("order_id").is_none_or(Value::is_null)
        {
            fields.insert("order_id".into(), id.to_string().into());
        }
        Order::parse(value, SystemTime::UNIX_EPOCH).map_err(Rejected::Invalid)
    }

    #[test]
    fn the_plain_fast_path_accepts_exactly_what_the_full_check_accepts() {
        let id = Uuid::from_u128(7);
        let bodies = [
            r#"{"user":"lara","item":"frozen yogurt","quantity":10}"#,
            r#"{"order_id":"6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a","user":"a","item":"b","quantity":1}"#,
            r#"{"order_id":null,"user":"a","item":"b","quantity":1000}"#,
            r#"{"order_id":"6F1C1E1E-0C1A-4A8E-9D4E-6F0B5D8F3C2A","user":"a","item":"b","quantity":1}"#,
            r#"{"order_id":"\u0036f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a","user":"a","item":"b","quantity":1}"#,
            r#"{"order_id":"6f1c1e1e0c1a4a8e9d4e6f0b5d8f3c2a","user":"a","item":"b","quantity":1}"#,
            r#"{"user":"a","item":"b","quantity":10.0}"#,
            r#"{"user":"a","item":"b","quantity":1e1}"#,
            r#"{"user":"a","item":"b","quantity":0}"#,
            r#"{"user":"a","item":"b","quantity":1001}"#,
            r#"{"user":"a","item":"b","quantity":-1}"#,
            r#"{"user":"a","item":"b","quantity":4294967297}"#,
            r#"{"user":"a","user":"b","item":"c","quantity":1}"#,
            r#"{"user":"a","item":"b","quantity":1,"colour":"red"}"#,
            r#"{"user":"  ","item":"b","quantity":1}"#,
            r#"{"user":"\ufeff","item":"b","quantity":1}"#,
            r#"{"user":"a\u0000","item":"b","quantity":1}"#,
            r#"{"user":"l\u00e4ra","item":"b","quantity":1}"#,
            r#"{"item":"b","quantity":1}"#,
            r#" {"user":"a","item":"b","quantity":1} "#,
            r#"{"user":"a","item":"b","quantity":1}x"#,
            r#"{"user":"a","item":"b","quantity":"1"}"#,
            r#"[1]"#,
            r#"nope"#,
            "",
        ];
        for body in bodies {
            assert_eq!(
                Order::from_json(body.as_bytes(), SystemTime::UNIX_EPOCH, Some(id)),
                full_check(body.as_bytes(), id),
                "{body}"
            );
        }
        let long = format!(r#"{{"user":"{}","item":"b","quantity":1}}"#, "é".repeat(65));
        assert!(matches!(
            Order::from_json(long.as_bytes(), SystemTime::UNIX_EPOCH, None),
            Err(Rejected::Invalid(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn both_ways_of_reading_a_body_agree(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["order_id", "user", "item", "quantity", "x"]),
                    proptest::sample::select(vec![
                        r#""6f1c1e1e-0c1a-4a8e-9d4e-6f0b5d8f3c2a""#, r#""lara""#, r#"" ""#,
                        r#""""#, "1", "1000", "1001", "0", "2.0", "2.5", "null", "true",
                        r#""a\nb""#, r#""\u00e9""#, "[]", "{}",
                    ]),
                ),
                0..6,
            )
        ) {
            let body = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!(r#""{k}":{v}"#))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let id = Uuid::from_u128(7);
            proptest::prop_assert_eq!(
                Order::from_json(body.as_bytes(), SystemTime::UNIX_EPOCH, Some(id)),
                full_check(body.as_bytes(), id),
                "{}", body
            );
        }
    }

    #[test]
    fn the_record_value_is_the_order_as_json() {
        let order = Order::from_json(
            br#"{"user":"lara","item":"frozen \"yogurt\"","quantity":10}"#,
            SystemTime::UNIX_EPOCH,
            Some(Uuid::from_u128(7)),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(order.json()).unwrap(),
            r#"{"order_id":"00000000-0000-0000-0000-000000000007","user":"lara","item":"frozen \"yogurt\"","quantity":10,"created_at":"1970-01-01T00:00:00.000Z"}"#
        );
    }

    #[test]
    fn a_published_order_reads_back_as_tracked() {
        let order =
            parse(json!({"user": "lara", "item": "frozen yogurt", "quantity": 10})).unwrap();
        let tracked =
            TrackedOrder::from_record(order.json(), 2, 41, SystemTime::UNIX_EPOCH).unwrap();
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

        // The appending form writes the same, clamped alike.
        for t in [
            before_1970,
            far,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_166_282_123),
        ] {
            let mut out = b"at ".to_vec();
            write_rfc3339(&mut out, t);
            assert_eq!(out, format!("at {}", rfc3339(t)).into_bytes());
        }
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
        assert!(TrackedOrder::from_record(order.json(), 0, 0, SystemTime::UNIX_EPOCH).is_ok());
    }
}
