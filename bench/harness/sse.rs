//! Stream clients: a small HTTP/1.1 chunked + SSE reader that costs little per event, and
//! the `stream-clients` role, a child process holding thousands of streams.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Res;

/// How long a stream-clients process waits at most for late events after the last order
/// (it stops earlier once every client is done, or none received anything for 10 s).
pub(crate) const LATE_EVENTS_WAIT: Duration = Duration::from_secs(300);

/// How long the harness waits for a stream-clients process's RESULT: its wait for late
/// events and some time to report.
pub(crate) const RESULT_WAIT: Duration = Duration::from_secs(LATE_EVENTS_WAIT.as_secs() + 30);
use super::hist::Latency;
use super::http::json_int;
use super::procs::now_us;

/// One SSE block, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block<'a> {
    /// The opening `: connected` comment.
    Connected,
    Order {
        partition: i32,
        offset: i64,
    },
    /// Another event (`overflow`, `gap`, `unavailable`).
    Event(&'a [u8]),
    /// A comment: keep-alive, shutdown notice.
    Comment,
}

fn classify(block: &[u8]) -> Block<'_> {
    if block.starts_with(b": connected") {
        return Block::Connected;
    }
    if let Some(rest) = block.strip_prefix(b"event: ") {
        let name = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
        if name == b"order" {
            let p = json_int(block, br#""partition""#);
            let o = json_int(block, br#""offset""#);
            if let (Some(p), Some(o)) = (p, o) {
                return Block::Order {
                    partition: p as i32,
                    offset: o,
                };
            }
        }
        return Block::Event(name);
    }
    Block::Comment
}

/// The `id:` of a block.
pub(crate) fn block_id(block: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(block, b"\nid: ")? + 5;
    let rest = &block[at..];
    let end = memchr::memchr(b'\n', rest)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Undoes HTTP/1.1 chunked framing and splits the body into SSE blocks.
#[derive(Default)]
struct Reader {
    head_done: bool,
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Bytes left in the current chunk, then its CRLF.
    chunk_left: usize,
    need_crlf: bool,
    ended: bool,
}

impl Reader {
    /// Decodes what arrived; calls `on_block` with each complete block.
    fn feed(
        &mut self,
        on_block: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Res<ControlFlow<()>> {
        let mut pos = 0;
        if !self.head_done {
            let Some(end) = memchr::memmem::find(&self.raw, b"\r\n\r\n") else {
                return Ok(ControlFlow::Continue(()));
            };
            let head = &self.raw[..end];
            if !head.starts_with(b"HTTP/1.1 200") {
                let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
                return Err(format!("stream answered {}", String::from_utf8_lossy(line)).into());
            }
            self.head_done = true;
            pos = end + 4;
        }
        while !self.ended {
            if self.chunk_left > 0 {
                let n = self.chunk_left.min(self.raw.len() - pos);
                if n == 0 {
                    break;
                }
                self.body.extend_from_slice(&self.raw[pos..pos + n]);
                pos += n;
                self.chunk_left -= n;
                self.need_crlf = self.chunk_left == 0;
                continue;
            }
            if self.need_crlf {
                if self.raw.len() - pos < 2 {
                    break;
                }
                pos += 2;
                self.need_crlf = false;
                continue;
            }
            let Some(eol) = memchr::memmem::find(&self.raw[pos..], b"\r\n") else {
                break;
            };
            let line = &self.raw[pos..pos + eol];
            let hex = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = usize::from_str_radix(std::str::from_utf8(hex)?.trim(), 16)?;
            pos += eol + 2;
            if size == 0 {
                self.ended = true;
                break;
            }
            self.chunk_left = size;
        }
        self.raw.drain(..pos);
        let mut done = 0;
        let mut flow = ControlFlow::Continue(());
        while let Some(end) = memchr::memmem::find(&self.body[done..], b"\n\n") {
            let block = &self.body[done..done + end + 2];
            done += end + 2;
            if on_block(block).is_break() {
                flow = ControlFlow::Break(());
                break;
            }
        }
        self.body.drain(..done);
        Ok(flow)
    }
}

/// Opens `GET path` with `headers` and hands every block to `on_block` with the time (µs)
/// its bytes were read, until it breaks or the stream ends.
pub(crate) async fn stream(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    on_block: impl FnMut(&[u8], u64) -> ControlFlow<()>,
) -> Res<()> {
    stream_paced(addr, path, headers, None, on_block).await
}

/// A slow reader: at most 2 KiB per read, and a pause before each (about 35 order events/s).
const SLOW_READ: usize = 2 * 1024;

/// [`stream`], reading slowly when `pause` is set.
async fn stream_paced(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    pause: Option<Duration>,
    mut on_block: impl FnMut(&[u8], u64) -> ControlFlow<()>,
) -> Res<()> {
    let mut socket = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n{headers}\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut reader = Reader::default();
    let mut slow = vec![0u8; SLOW_READ];
    loop {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
            let n = socket.read(&mut slow).await?;
            if n == 0 {
                return Ok(());
            }
            reader.raw.extend_from_slice(&slow[..n]);
        } else {
            reader.raw.reserve(16 * 1024);
            if socket.read_buf(&mut reader.raw).await? == 0 {
                return Ok(());
            }
        }
        let at = now_us();
        if reader.feed(&mut |block| on_block(block, at))?.is_break() || reader.ended {
            return Ok(());
        }
    }
}

/// Pulls the block classification through for callers outside this module.
pub(crate) fn kind(block: &[u8]) -> Block<'_> {
    classify(block)
}

/// What one client of a child process saw.
#[derive(Default)]
struct Client {
    /// (partition, first offset, last offset)
    parts: Vec<(i32, i64, i64)>,
    orders: u64,
    out_of_order: bool,
    told: bool,
    connected: bool,
    ended: bool,
    error: bool,
    /// A deliberately slow reader (soak): not expected to keep up.
    slow: bool,
    reconnects: u64,
}

#[derive(Default)]
struct Shared {
    /// Ack time (µs) of each order, by partition << 40 | offset.
    acks: HashMap<u64, u64>,
    /// Receipt times of orders whose ack the parent has not reported yet.
    pending: HashMap<u64, Vec<u64>>,
    latency: Option<Latency>,
    before_ack: u64,
    clients: Vec<Client>,
}

/// What every client must have received: the order count and, per partition, the first
/// and last offset.
type Expected = (u64, Vec<(i32, i64, i64)>);

fn key(p: i32, o: i64) -> u64 {
    ((p as u64) << 40) | (o as u64 & ((1 << 40) - 1))
}

impl Shared {
    fn latency(&mut self) -> &mut Latency {
        self.latency.get_or_insert_with(Latency::new)
    }

    fn received(&mut self, client: usize, p: i32, o: i64, at: u64) {
        let c = &mut self.clients[client];
        c.orders += 1;
        match c.parts.iter_mut().find(|x| x.0 == p) {
            Some(part) => {
                c.out_of_order |= o != part.2 + 1;
                part.2 = o;
            }
            None => c.parts.push((p, o, o)),
        }
        let k = key(p, o);
        match self.acks.get(&k) {
            Some(&ack) => self.record(at, ack),
            None => self.pending.entry(k).or_default().push(at),
        }
    }

    fn record(&mut self, at: u64, ack: u64) {
        if at < ack {
            // The event beat the 202 to the harness; its latency from the 202 is nil.
            self.before_ack += 1;
        }
        self.latency().record(at.saturating_sub(ack));
    }

    fn acked(&mut self, k: u64, ack: u64) {
        self.acks.insert(k, ack);
        if let Some(times) = self.pending.remove(&k) {
            for at in times {
                self.record(at, ack);
            }
        }
    }
}

/// The `stream-clients` role: opens `n` live streams on `addr`, prints `READY ok failed`,
/// then reads `A partition offset ack_us` lines (each acknowledged order) and one
/// `E total partition:first:last ...` line (what every client must have received), waits
/// for the clients to get everything (or be told they fell behind) and prints
/// `RESULT {json}`.
///
/// With `slow_every` > 0, every such client reads slowly, and reconnects with its last
/// event id whenever its stream ends (as EventSource does); those are not expected to
/// have everything.
pub(crate) fn child_main(addr: SocketAddr, n: usize, slow_every: usize) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, child(addr, n, slow_every))
}

/// A slow client: reads 2 KiB every 200 ms, reconnects with its last id when told.
async fn slow_client(
    addr: SocketAddr,
    i: usize,
    shared: Rc<RefCell<Shared>>,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
) {
    let mut ready = Some(ready);
    let mut last_id: Option<String> = None;
    loop {
        let headers = last_id
            .as_ref()
            .map(|id| format!("last-event-id: {id}\r\n"))
            .unwrap_or_default();
        let pause = Some(Duration::from_millis(200));
        let result = stream_paced(addr, "/orders/stream", &headers, pause, |block, _| {
            match kind(block) {
                Block::Connected => {
                    shared.borrow_mut().clients[i].connected = true;
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(true);
                    }
                }
                Block::Order { .. } => {
                    shared.borrow_mut().clients[i].orders += 1;
                    if let Some(id) = block_id(block) {
                        last_id = Some(id);
                    }
                }
                Block::Event(_) => shared.borrow_mut().clients[i].told = true,
                Block::Comment => {}
            }
            ControlFlow::Continue(())
        })
        .await;
        if let Some(tx) = ready.take() {
            let _ = tx.send(false);
        }
        {
            let mut s = shared.borrow_mut();
            s.clients[i].error |= result.is_err();
            s.clients[i].reconnects += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn child(addr: SocketAddr, n: usize, slow_every: usize) -> Res<()> {
    let shared = Rc::new(RefCell::new(Shared::default()));
    shared.borrow_mut().clients.resize_with(n, Client::default);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    for i in (0..n).filter(|i| slow_every > 0 && i % slow_every == slow_every - 1) {
        shared.borrow_mut().clients[i].slow = true;
        tokio::task::spawn_local(slow_client(addr, i, shared.clone(), ready_tx.clone()));
    }
    // Opening thousands of connections at once overflows the listen backlog and costs
    // seconds of SYN retries; a few hundred at a time connect at once.
    let opening = Rc::new(tokio::sync::Semaphore::new(200));
    for i in (0..n).filter(|i| !shared.borrow().clients[*i].slow) {
        let (shared, opening, ready_tx) = (shared.clone(), opening.clone(), ready_tx.clone());
        tokio::task::spawn_local(async move {
            let permit = opening.acquire().await;
            let mut permit = Some(permit);
            let mut ready_tx = Some(ready_tx);
            let result = stream(addr, "/orders/stream", "", |block, at| {
                match kind(block) {
                    Block::Connected => {
                        shared.borrow_mut().clients[i].connected = true;
                        permit.take();
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(true);
                        }
                    }
                    Block::Order { partition, offset } => {
                        shared.borrow_mut().received(i, partition, offset, at);
                    }
                    Block::Event(_) => shared.borrow_mut().clients[i].told = true,
                    Block::Comment => {}
                }
                ControlFlow::Continue(())
            })
            .await;
            let mut s = shared.borrow_mut();
            s.clients[i].ended = true;
            s.clients[i].error |= result.is_err();
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(false);
            }
        });
    }
    drop(ready_tx);
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < n {
        match ready_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) | None => failed += 1,
        }
    }
    println!("READY {ok} {failed}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut expected: Option<Expected> = None;
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("A") => {
                let v: Vec<i64> = words.filter_map(|w| w.parse().ok()).collect();
                if let [p, o, ack] = v[..] {
                    shared.borrow_mut().acked(key(p as i32, o), ack as u64);
                }
            }
            Some("E") => {
                let total = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let parts = words
                    .filter_map(|w| {
                        let mut it = w.split(':').filter_map(|x| x.parse::<i64>().ok());
                        Some((it.next()? as i32, it.next()?, it.next()?))
                    })
                    .collect();
                expected = Some((total, parts));
                break;
            }
            _ => {}
        }
    }
    let (total, parts) = expected.unwrap_or_default();
    // Offsets arrive consecutively per partition, so a run covering the first and last
    // acknowledged offset holds every acknowledged order. It may hold more: a record whose
    // 202 never reached the load generator (its connection closed) is on the topic too.
    let complete = |c: &Client| {
        !c.out_of_order
            && c.orders >= total
            && parts.iter().all(|(p, first, last)| {
                c.parts
                    .iter()
                    .any(|x| x.0 == *p && x.1 <= *first && x.2 >= *last)
            })
    };
    // Everyone either has everything or was told (overflow) or is gone. An overloaded
    // machine delivers late, not never: wait while the waiting clients still receive, so
    // that a client counted as silently incomplete is one that stopped getting events (or
    // saw a gap), not one still catching up.
    let started = tokio::time::Instant::now();
    let (mut progress, mut last_progress) = (0u64, started);
    loop {
        let (waiting, received) = shared
            .borrow()
            .clients
            .iter()
            .filter(|c| c.connected && !c.slow && !c.ended && !c.told && !complete(c))
            .fold((0u64, 0u64), |(n, sum), c| (n + 1, sum + c.orders));
        let now = tokio::time::Instant::now();
        if received != progress {
            (progress, last_progress) = (received, now);
        }
        let stalled = now - last_progress > Duration::from_secs(10);
        if waiting == 0 || stalled || now - started > LATE_EVENTS_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = shared.borrow_mut();
    let pending: u64 = s.pending.values().map(|v| v.len() as u64).sum();
    let latency = s.latency().encode();
    let all = &s.clients;
    let clients: Vec<&Client> = all.iter().filter(|c| !c.slow).collect();
    let slow: Vec<&Client> = all.iter().filter(|c| c.slow).collect();
    let result = json!({
        "clients": clients.len(),
        "connected": clients.iter().filter(|c| c.connected).count(),
        "complete": clients.iter().filter(|c| complete(c)).count(),
        "told": clients.iter().filter(|c| c.told).count(),
        "silent_incomplete": clients.iter().filter(|c| c.connected && !c.told && !complete(c)).count(),
        "out_of_order": clients.iter().filter(|c| c.out_of_order).count(),
        "errors": clients.iter().filter(|c| c.error).count(),
        "events": clients.iter().map(|c| c.orders).sum::<u64>(),
        "slow_clients": slow.len(),
        "slow_told": slow.iter().filter(|c| c.told).count(),
        "slow_reconnects": slow.iter().map(|c| c.reconnects).sum::<u64>(),
        "slow_events": slow.iter().map(|c| c.orders).sum::<u64>(),
        "before_ack": s.before_ack,
        "unacked_events": pending,
        "latency": latency,
    });
    println!("RESULT {result}");
    Ok(())
}

/// Checks run by `cargo test --all-targets`: chunks split anywhere still give whole blocks.
pub(crate) fn self_check() -> Res<()> {
    let events = b": connected\nretry: 2000\n\nevent: order\nid: AbC\ndata: {\"partition\":1,\"offset\":7}\n\n: keep-alive\n\n";
    let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in events.chunks(9) {
        wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        wire.extend_from_slice(part);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    for split in [1, 3, 7, wire.len()] {
        let mut reader = Reader::default();
        let mut seen = Vec::new();
        for piece in wire.chunks(split) {
            reader.raw.extend_from_slice(piece);
            let _ = reader.feed(&mut |block| {
                seen.push((format!("{:?}", kind(block)), block_id(block)));
                ControlFlow::Continue(())
            })?;
        }
        assert!(reader.ended, "split {split}");
        assert_eq!(
            seen,
            [
                ("Connected".to_owned(), None),
                (
                    "Order { partition: 1, offset: 7 }".to_owned(),
                    Some("AbC".to_owned())
                ),
                ("Comment".to_owned(), None),
            ],
            "split {split}"
        );
    }
    Ok(())
}
