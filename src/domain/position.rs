//! Stream positions: for every partition, the offset of the next record a client has not
//! seen, and the timestamp of the record it passed last. Encoded into each SSE event id so a
//! reconnecting client can say exactly where it was, and so the gateway can tell when those
//! offsets now belong to a topic that was deleted and created again.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Format version; bump it when the byte layout changes so old ids fail loudly.
/// Version 2 added the per-partition record timestamp.
const VERSION: u8 = 2;
/// Longest id we try to decode; a position of hundreds of partitions fits easily.
const MAX_ID_LEN: usize = 8 * 1024;

/// Per-partition next offsets of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    next: BTreeMap<i32, Cursor>,
}

/// Where one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    next: i64,
    /// Timestamp (ms) of the record at `next - 1`; 0 when unknown.
    stamp: i64,
}

/// Why an event id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not an id this gateway wrote: bad characters, truncated, or trailing bytes.
    #[error("not a stream position written by this gateway")]
    Malformed,
    /// Written by a gateway with a different id format.
    #[error("stream position format version {0} is not supported")]
    UnknownVersion(u8),
    /// Written for another topic.
    #[error("stream position belongs to another topic")]
    ForeignTopic,
}

impl Position {
    /// The next offset a reader of `partition` has not seen, if it has seen any.
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.next.get(&partition).map(|c| c.next)
    }

    /// Timestamp (ms) of the record just before the next offset, when known: the same
    /// offset on a recreated topic holds a different record.
    pub fn stamp(&self, partition: i32) -> Option<i64> {
        self.next
            .get(&partition)
            .map(|c| c.stamp)
            .filter(|s| *s != 0)
    }

    /// Whether the record at `offset` was already passed.
    pub fn has_passed(&self, partition: i32, offset: i64) -> bool {
        self.next_offset(partition)
            .is_some_and(|next| offset < next)
    }

    /// Moves past the record at `offset`, stamped `stamp` (ms); never moves backwards.
    pub fn advance(&mut self, partition: i32, offset: i64, stamp: i64) {
        let cursor = self
            .next
            .entry(partition)
            .or_insert(Cursor { next: 0, stamp: 0 });
        let next = offset.saturating_add(1);
        if next > cursor.next {
            *cursor = Cursor {
                next,
                stamp: stamp.max(0),
            };
        }
    }

    /// Sets where `partition` continues, also backwards: the partition's history before
    /// `next` is gone (retention, or the topic was recreated). The stamp is unknown.
    pub fn restart(&mut self, partition: i32, next: i64) {
        self.next.insert(partition, Cursor { next, stamp: 0 });
    }

    /// Partitions and their next offsets, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.next.iter().map(|(p, c)| (*p, c.next))
    }

    /// The compact, URL-safe id: version, topic fingerprint, then (partition, next offset,
    /// stamp) varints.
    pub fn encode(&self, topic: &str) -> String {
        let mut bytes = Vec::with_capacity(5 + self.next.len() * 12);
        bytes.push(VERSION);
        bytes.extend_from_slice(&fingerprint(topic).to_le_bytes());
        for (partition, cursor) in &self.next {
            // None is negative: partitions are ids, offsets only advance from 0, and stamps
            // are clamped at 0 ("unknown").
            put_varint(&mut bytes, u64::from(partition.unsigned_abs()));
            put_varint(&mut bytes, cursor.next.unsigned_abs());
            put_varint(&mut bytes, cursor.stamp.unsigned_abs());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads an id written by [`Position::encode`] for the same topic.
    pub fn decode(id: &str, topic: &str) -> Result<Self, PositionError> {
        if id.len() > MAX_ID_LEN {
            return Err(PositionError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| PositionError::Malformed)?;
        let (&version, rest) = bytes.split_first().ok_or(PositionError::Malformed)?;
        if version != VERSION {
            return Err(PositionError::UnknownVersion(version));
        }
        let (print, mut rest) = rest
            .split_first_chunk::<4>()
            .ok_or(PositionError::Malformed)?;
        if u32::from_le_bytes(*print) != fingerprint(topic) {
            return Err(PositionError::ForeignTopic);
        }
        let mut next = BTreeMap::new();
        let mut last_partition = None;
        while !rest.is_empty() {
            let partition = take_varint(&mut rest).and_then(|p| i32::try_from(p).ok());
            let offset = take_varint(&mut rest).and_then(|o| i64::try_from(o).ok());
            let stamp = take_varint(&mut rest).and_then(|s| i64::try_from(s).ok());
            let (Some(partition), Some(offset), Some(stamp)) = (partition, offset, stamp) else {
                return Err(PositionError::Malformed);
            };
            // Strictly ascending partitions make every position have exactly one id.
            if last_partition.is_some_and(|last| partition <= last) {
                return Err(PositionError::Malformed);
            }
            last_partition = Some(partition);
            next.insert(
                partition,
                Cursor {
                    next: offset,
                    stamp,
                },
            );
        }
        Ok(Self { next })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<_> = self.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
fn fingerprint(topic: &str) -> u32 {
    topic.bytes().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// LEB128; rejects overlong encodings so that each value has one spelling.
fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return None;
            }
            *input = &input[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: i64 = 1_764_000_000_000;

    fn position(pairs: &[(i32, i64)]) -> Position {
        let mut p = Position::default();
        for &(partition, next) in pairs {
            p.advance(partition, next - 1, STAMP + i64::from(partition));
        }
        p
    }

    #[test]
    fn round_trips_through_its_id() {
        for pairs in [
            &[][..],
            &[(0, 1)],
            &[(0, 5), (1, 300), (2, i64::MAX)],
            &[(7, 1 << 40)],
        ] {
            let p = position(pairs);
            let id = p.encode("orders");
            assert_eq!(Position::decode(&id, "orders"), Ok(p), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn ids_are_compact() {
        let id = position(&[(0, 1_000_000), (1, 1_000_000), (2, 1_000_000)]).encode("orders");
        assert!(id.len() <= 48, "{id}");
    }

    #[test]
    fn advancing_never_moves_backwards_and_keeps_the_last_stamp() {
        let mut p = position(&[(0, 10)]);
        p.advance(0, 3, 42);
        assert_eq!((p.next_offset(0), p.stamp(0)), (Some(10), Some(STAMP)));
        assert!(p.has_passed(0, 9) && !p.has_passed(0, 10) && !p.has_passed(1, 0));
        p.restart(0, 2);
        assert_eq!(
            (p.next_offset(0), p.stamp(0)),
            (Some(2), None),
            "a restart knows no stamp"
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for id in [
            "",
            "!!!",
            "Ag",
            "AgAAAA=",
            "💥",
            &"A".repeat(MAX_ID_LEN + 1),
        ] {
            assert_eq!(
                Position::decode(id, "orders"),
                Err(PositionError::Malformed),
                "{id}"
            );
        }
    }

    #[test]
    fn another_topic_or_version_is_named() {
        let id = position(&[(0, 1)]).encode("payments");
        assert_eq!(
            Position::decode(&id, "orders"),
            Err(PositionError::ForeignTopic)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        bytes[0] = 9;
        let id = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            Position::decode(&id, "payments"),
            Err(PositionError::UnknownVersion(9))
        );
    }

    #[test]
    fn unordered_or_overlong_encodings_are_rejected() {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&fingerprint("orders").to_le_bytes());
        let header = bytes.clone();
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        let id = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            Position::decode(&id, "orders"),
            Err(PositionError::Malformed)
        );
        let mut overlong = header;
        overlong.extend_from_slice(&[0x80, 0x00, 0x01]);
        let id = URL_SAFE_NO_PAD.encode(&overlong);
        assert_eq!(
            Position::decode(&id, "orders"),
            Err(PositionError::Malformed)
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn positions() -> impl Strategy<Value = Position> {
        let cursor = (0..i64::MAX, 0..i64::MAX).prop_map(|(next, stamp)| Cursor { next, stamp });
        proptest::collection::btree_map(0..10_000i32, cursor, 0..64)
            .prop_map(|next| Position { next })
    }

    proptest! {
        #[test]
        fn every_position_round_trips_through_its_id(p in positions(), topic in "[a-zA-Z0-9._-]{1,40}") {
            let id = p.encode(&topic);
            prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(Position::decode(&id, &topic), Ok(p));
        }

        #[test]
        fn arbitrary_text_is_rejected_unless_it_is_a_canonical_id(id in ".{0,64}") {
            if let Ok(p) = Position::decode(&id, "orders") {
                prop_assert_eq!(p.encode("orders"), id);
            }
        }

        #[test]
        fn arbitrary_bytes_as_ids_are_decoded_or_rejected_consistently(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let id = URL_SAFE_NO_PAD.encode(&bytes);
            if let Ok(p) = Position::decode(&id, "orders") {
                // Whatever decodes re-encodes to the very same id: one spelling per position.
                prop_assert_eq!(p.encode("orders"), id);
            }
        }
    }
}
