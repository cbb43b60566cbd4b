//! A lean HTTP/1.1 client: one hyper connection per worker, kept alive.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Res;

pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Res<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Whether the server closed the connection (an idle keep-alive connection is closed after
    /// the gateway's REQUEST_TIMEOUT); a pool must not hand it out again.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer: (status, body).
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Res<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One GET on a fresh connection; the status.
pub(crate) async fn get_status(addr: SocketAddr, path: &str) -> Res<u16> {
    Ok(get(addr, path).await?.0)
}

/// One GET on a fresh connection: (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Res<(u16, Bytes)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A counter's value from the gateway's /metrics.
pub(crate) async fn metric(addr: SocketAddr, name: &str) -> Res<f64> {
    let (_, body) = get(addr, "/metrics").await?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .ok_or_else(|| format!("{name} not in /metrics").into())
}

/// The integer after `"key":` in a flat JSON object, without parsing all of it: the
/// stream clients read a million of these a second.
pub(crate) fn json_int(data: &[u8], key: &[u8]) -> Option<i64> {
    let at = memchr::memmem::find(data, key)? + key.len();
    let rest = &data[at..];
    let rest = rest.strip_prefix(b":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Checks run by `cargo test --all-targets` (this binary has no test harness).
pub(crate) fn self_check() {
    let d = br#"{"order_id":"x","partition":2,"offset":12345,"t":"a"}"#;
    assert_eq!(json_int(d, br#""partition""#), Some(2));
    assert_eq!(json_int(d, br#""offset""#), Some(12345));
    assert_eq!(json_int(d, br#""nope""#), None);
}
