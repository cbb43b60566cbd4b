//! `GET /orders/stream`: tracked orders as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::hub::{Next, Subscription};

/// How long a client waits before reconnecting after the stream ends.
const RETRY: Duration = Duration::from_secs(2);

/// Watch orders as they are tracked.
///
/// `text/event-stream`. Each order is an `order` event whose `id` is the opaque stream
/// position after it and whose `data` is the order JSON with `partition`, `offset` and
/// `timestamp`. A comment keeps idle connections open. A client too slow to keep up gets an
/// `overflow` event (`{"missed": n, "last_event_id": ...}`) and the stream closes.
#[utoipa::path(get, path = "/orders/stream", tag = "orders",
    responses((status = 200, description = "An endless stream of `order` events", content_type = "text/event-stream", body = String)))]
pub async fn stream_orders(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("orders_gateway_open_streams").increment(1.0);
    let events = order_events(state.hub.subscribe(), state.shutdown.clone());
    let keep_alive = KeepAlive::new()
        .interval(state.stream_keep_alive)
        .text("keep-alive");
    (
        // Reverse proxies such as nginx would otherwise buffer the stream.
        [
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Sse::new(events).keep_alive(keep_alive),
    )
}

enum Phase {
    Start,
    Live,
    Done,
}

struct Feed {
    subscription: Subscription,
    shutdown: CancellationToken,
    last_id: Option<String>,
    phase: Phase,
    _open: OpenStream,
}

/// Counts open streams down when a stream ends, however it ends.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("orders_gateway_open_streams").decrement(1.0);
    }
}

fn order_events(
    subscription: Subscription,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let feed = Feed {
        subscription,
        shutdown,
        last_id: None,
        phase: Phase::Start,
        _open: OpenStream,
    };
    stream::unfold(feed, |mut feed| async move {
        let event = match feed.phase {
            Phase::Start => {
                feed.phase = Phase::Live;
                // Sent at once so clients and proxies see the stream is open.
                Event::default().comment("connected").retry(RETRY)
            }
            Phase::Live => feed.next_event().await?,
            Phase::Done => return None,
        };
        Some((Ok(event), feed))
    })
}

impl Feed {
    async fn next_event(&mut self) -> Option<Event> {
        let next = tokio::select! {
            () = self.shutdown.cancelled() => {
                self.phase = Phase::Done;
                return Some(Event::default()
                    .comment("gateway shutting down; reconnect with Last-Event-ID")
                    .retry(RETRY));
            }
            next = self.subscription.next() => next,
        };
        match next {
            Next::Event(event) => {
                metrics::counter!("orders_gateway_stream_events_total").increment(1);
                self.last_id = Some(event.id.clone());
                Some(
                    Event::default()
                        .event("order")
                        .id(&event.id)
                        .data(&event.data),
                )
            }
            Next::Lagged { missed } => {
                metrics::counter!("orders_gateway_stream_overflows_total").increment(1);
                self.phase = Phase::Done;
                let data = json!({
                    "missed": missed,
                    "last_event_id": self.last_id,
                    "detail": "this client fell too far behind the live feed and was disconnected",
                });
                Some(
                    Event::default()
                        .event("overflow")
                        .data(data.to_string())
                        .retry(RETRY),
                )
            }
            Next::Closed => None,
        }
    }
}
