//! The HTTP/1.1 server: accepts connections, bounds how long a request head may take to
//! arrive and how much each connection buffers, and drains open connections on shutdown.
//!
//! `axum::serve` would do, but it sets no timer, so hyper's header-read timeout never
//! fires: a client sending its headers one byte a minute (slowloris) would hold a
//! connection forever.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request head, and to start the next one on a
    /// kept-alive connection; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Bytes hyper buffers per connection, each way. Bounds the request head (larger heads
    /// get a 431) and what a slow stream client holds before the stream itself notices.
    pub buffer: usize,
}

impl ConnectionLimits {
    /// hyper refuses buffers under 8 KiB; the head must fit with room to spare.
    pub fn new(header_read_timeout: Duration, max_header_bytes: usize) -> Self {
        Self {
            header_read_timeout,
            buffer: (max_header_bytes * 2).max(64 * 1024),
        }
    }
}

/// Serves `app` on `listener` until `cancel`, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) {
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.buffer);
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small SSE frames and answers go out at once.
        let _ = stream.set_nodelay(true);
        // Peer addresses let the admin views and the rate limit tell clients apart.
        let service = app
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_holds_the_largest_head_twice_and_never_less_than_64_kib() {
        assert_eq!(
            ConnectionLimits::new(Duration::ZERO, 16 * 1024).buffer,
            64 * 1024
        );
        assert_eq!(
            ConnectionLimits::new(Duration::ZERO, 100 * 1024).buffer,
            200 * 1024
        );
    }
}
