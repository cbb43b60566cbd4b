//! The response body of one client: its feed, a chunk at a time.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, stream};
use tokio::time::Instant;

use super::feed::{Feed, Phase};
use super::frame::Chunk;

/// The SSE text of one client, written chunk by chunk: everything that is ready when the
/// client's task runs goes out in one chunk (one write on the socket). With thousands of
/// clients a write per event per client was the cost that mattered: 44% of the gateway's
/// CPU at 5,000 streams was `writev`.
pub(super) struct Writer {
    feed: Feed,
    /// Fires `interval` after the last write; a keep-alive comment follows a silence.
    keep_alive: Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
    last_write: Instant,
}

impl Writer {
    /// A keep-alive comment goes out after `keep_alive` without a write.
    pub(super) fn new(feed: Feed, keep_alive: Duration) -> Self {
        Self {
            feed,
            keep_alive: Box::pin(tokio::time::sleep(keep_alive)),
            interval: keep_alive,
            last_write: Instant::now(),
        }
    }

    pub(super) fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        stream::unfold(self, |mut w| async move {
            let chunk = w.next_chunk().await?;
            Some((Ok(chunk), w))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = Chunk::default();
        match self.feed.phase {
            // Sent at once so clients and proxies see the stream is open.
            Phase::Start => {
                self.feed.phase = Phase::Live;
                out.push_static(b": connected\nretry: 2000\n\n");
            }
            Phase::Live => {
                self.wait_for_first(&mut out).await;
                if out.is_empty() {
                    return None;
                }
                self.feed.drain_ready(&mut out);
            }
            Phase::Done => return None,
        }
        if self.feed.sent > 0 {
            metrics::counter!("orders_gateway_stream_events_total").increment(self.feed.sent);
            self.feed.sent = 0;
        }
        // The keep-alive timer is not reset here: resetting a timer per write costs more
        // than checking, when it fires, whether there was a write since.
        self.last_write = Instant::now();
        Some(out.freeze())
    }

    /// Waits until there is something to write: an event, the shutdown notice, or a
    /// keep-alive after a silence. Leaves `out` empty when the stream ends.
    async fn wait_for_first(&mut self, out: &mut Chunk) {
        let feed = &mut self.feed;
        let shutdown = feed.shutdown.clone();
        while out.is_empty() {
            if feed.query.limit == Some(0) || matches!(feed.phase, Phase::Done) {
                return;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    feed.phase = Phase::Done;
                    out.push_static(
                        b": gateway shutting down; reconnect with Last-Event-ID\nretry: 2000\n\n",
                    );
                }
                item = feed.next_item() => {
                    if feed.apply(item, out).is_break() {
                        feed.phase = Phase::Done;
                    }
                }
                () = self.keep_alive.as_mut() => {
                    let due = self.last_write + self.interval;
                    if Instant::now() >= due {
                        out.push_static(b": keep-alive\n\n");
                        self.keep_alive.as_mut().reset(Instant::now() + self.interval);
                    } else {
                        self.keep_alive.as_mut().reset(due);
                    }
                }
            }
        }
    }
}
