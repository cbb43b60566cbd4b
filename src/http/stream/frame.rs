//! The SSE text, written by hand: an order's frame is rendered once and shared by every
//! client that sends the hub's id, and a client's chunk gathers what is ready into one
//! buffer.

use bytes::{Bytes, BytesMut};
use serde::Serialize;

/// Most bytes one body chunk gathers before it is handed to the connection.
pub(super) const MAX_CHUNK: usize = 64 * 1024;

/// One chunk of the body: a single shared frame as is, several copied into one buffer.
#[derive(Default)]
pub(super) struct Chunk {
    single: Option<Bytes>,
    buf: BytesMut,
}

impl Chunk {
    pub(super) fn is_empty(&self) -> bool {
        self.single.is_none() && self.buf.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.single.as_ref().map_or(0, Bytes::len) + self.buf.len()
    }

    pub(super) fn push_shared(&mut self, frame: &Bytes) {
        if self.is_empty() {
            self.single = Some(frame.clone());
        } else {
            self.buf().extend_from_slice(frame);
        }
    }

    pub(super) fn push_static(&mut self, frame: &'static [u8]) {
        self.push_shared(&Bytes::from_static(frame));
    }

    pub(super) fn buf(&mut self) -> &mut BytesMut {
        if let Some(single) = self.single.take() {
            self.buf.extend_from_slice(&single);
        }
        &mut self.buf
    }

    pub(super) fn freeze(self) -> Bytes {
        match self.single {
            Some(single) => single,
            None => self.buf.freeze(),
        }
    }
}

/// `event: order`, `id`, `data`: the frame of one order, as `axum`'s `Event` renders it.
pub(super) fn render_order(id: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + id.len() + data.len());
    write_order(&mut buf, id, data);
    buf.freeze()
}

pub(super) fn write_order(buf: &mut BytesMut, id: &str, payload: &str) {
    field(buf, "event", "order");
    field(buf, "id", id);
    data(buf, payload);
    buf.extend_from_slice(b"\n");
}

/// One `name: value` line. Our names and values (event names, base64url ids) never hold
/// line breaks.
pub(super) fn field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.reserve(name.len() + value.len() + 3);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\n");
}

/// `data:` lines: a line break inside the value starts a new `data:` line (JSON from
/// serde_json has none, but the format must hold for any text).
pub(super) fn data(buf: &mut BytesMut, value: &str) {
    if value.is_empty() {
        return;
    }
    let value = value.as_bytes();
    buf.reserve(value.len() + 7);
    buf.extend_from_slice(b"data: ");
    let mut last = 0;
    for at in memchr::memchr2_iter(b'\n', b'\r', value) {
        buf.extend_from_slice(&value[last..=at]);
        buf.extend_from_slice(b"data: ");
        last = at + 1;
    }
    buf.extend_from_slice(&value[last..]);
    buf.extend_from_slice(b"\n");
}

pub(super) fn json(value: &impl Serialize) -> String {
    // Our event payloads are plain structs of strings and integers.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::sse::Event;
    use bytes::BytesMut;

    use super::{data, field, render_order};

    /// The frames are written by hand for speed; they must stay what `axum` would write.
    async fn axum_bytes(event: Event) -> Vec<u8> {
        use axum::response::IntoResponse;
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(event)]);
        let body = axum::response::sse::Sse::new(stream)
            .into_response()
            .into_body();
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn hand_written_frames_are_the_ones_axum_writes() {
        let payload = r#"{"order_id":"o1","user":"lara","quantity":1}"#;
        let ours = render_order("AeyWXjIAAQ", payload);
        let theirs = Event::default()
            .event("order")
            .id("AeyWXjIAAQ")
            .data(payload);
        assert_eq!(&ours[..], axum_bytes(theirs).await);

        let odd = "two\nlines\rand\r\nmore";
        let mut ours = BytesMut::new();
        field(&mut ours, "event", "overflow");
        data(&mut ours, odd);
        ours.extend_from_slice(b"retry: 2000\n\n");
        let theirs = Event::default()
            .event("overflow")
            .data(odd)
            .retry(Duration::from_secs(2));
        assert_eq!(&ours[..], axum_bytes(theirs).await);

        let comment = Event::default()
            .comment("gateway shutting down; reconnect with Last-Event-ID")
            .retry(Duration::from_secs(2));
        assert_eq!(
            axum_bytes(comment).await,
            b": gateway shutting down; reconnect with Last-Event-ID\nretry: 2000\n\n"
        );
        let connected = Event::default()
            .comment("connected")
            .retry(Duration::from_secs(2));
        assert_eq!(axum_bytes(connected).await, b": connected\nretry: 2000\n\n");
        assert_eq!(
            axum_bytes(Event::default().comment("keep-alive")).await,
            b": keep-alive\n\n"
        );
    }
}
