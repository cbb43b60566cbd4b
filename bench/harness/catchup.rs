//! Catch-up: a client resuming far behind (beyond the hub's memory, so read from Kafka),
//! timed until it is live again.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use super::Res;
use super::hist::{round1, round3};
use super::http::{Conn, metric};
use super::procs::{Build, Gateway, Usage};
use super::produce::{backfill, raw_producer};
use super::sse::{Block, block_id, kind, stream};

const ORDER: &[u8] = br#"{"user":"catch-up","item":"frozen yogurt","quantity":1}"#;

pub(crate) async fn run(bootstrap: &str, behind: usize, logs: &Path) -> Res<(Value, f64)> {
    eprintln!("catch-up: resuming {behind} orders behind");
    let gateway = Gateway::start(Build::Current, Some(bootstrap), "catchup", &[], logs).await?;
    let addr = gateway.addr;
    let mut conn = Conn::open(addr).await?;

    // An id captured early: the position after the first order.
    let id = tokio::spawn(async move {
        let mut id = None;
        stream(addr, "/orders/stream", "", |block, _| match kind(block) {
            Block::Order { .. } => {
                id = block_id(block);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .await
        .map(|()| id)
        .map_err(|e| e.to_string())
    });
    // The stream is opened before the order is placed; give it a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = conn
        .call(
            Method::POST,
            "/orders",
            Some(bytes::Bytes::from_static(ORDER)),
        )
        .await?;
    if status != 202 {
        return Err(format!("first order answered {status}").into());
    }
    let id = tokio::time::timeout(Duration::from_secs(10), id)
        .await
        .map_err(|_| "no event for the first order")???
        .ok_or("the first order's event has no id")?;

    let producer = raw_producer(bootstrap)?;
    let t = Instant::now();
    let backlog = backfill(&producer, &gateway.topic, behind).await?;
    let fill_seconds = t.elapsed().as_secs_f64();
    // The hub must hold every backlog order before the client resumes, or the "catch-up"
    // would partly be live streaming.
    let deadline = Instant::now() + Duration::from_secs(180);
    while metric(addr, "orders_gateway_tracker_records_total").await? < (behind + 1) as f64 {
        if Instant::now() > deadline {
            return Err("the tracker did not read the backlog within 180 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let usage = Usage::start(gateway.pid());
    let count = Arc::new(AtomicU64::new(0));
    let caught_up = Arc::new(tokio::sync::Notify::new());
    let t0 = Instant::now();
    let client = tokio::spawn({
        let (count, caught_up) = (count.clone(), caught_up.clone());
        let header = format!("last-event-id: {id}\r\n");
        async move {
            let mut first = None;
            let mut caught = None;
            let mut last: std::collections::HashMap<i32, i64> = Default::default();
            let mut contiguous = true;
            let mut other = 0u64;
            let result = stream(addr, "/orders/stream", &header, |block, _| {
                match kind(block) {
                    Block::Order { partition, offset } => {
                        if let Some(prev) = last.insert(partition, offset) {
                            contiguous &= offset == prev + 1;
                        }
                        first.get_or_insert_with(|| t0.elapsed());
                        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                        if n == behind as u64 {
                            caught = Some(t0.elapsed());
                            caught_up.notify_one();
                        }
                        if n > behind as u64 {
                            return ControlFlow::Break(());
                        }
                    }
                    Block::Event(_) => other += 1,
                    _ => {}
                }
                ControlFlow::Continue(())
            })
            .await;
            (
                result.map_err(|e| e.to_string()),
                first,
                caught,
                t0.elapsed(),
                contiguous,
                other,
            )
        }
    });
    tokio::time::timeout(Duration::from_secs(300), caught_up.notified())
        .await
        .map_err(|_| format!("catch-up stalled at {}", count.load(Ordering::Relaxed)))?;
    let usage = usage.finish();
    let (status, _) = conn
        .call(
            Method::POST,
            "/orders",
            Some(bytes::Bytes::from_static(ORDER)),
        )
        .await?;
    let (result, first, caught, live, contiguous, other) =
        tokio::time::timeout(Duration::from_secs(30), client).await??;
    result?;
    let ready_seconds = gateway.ready_seconds;
    gateway.stop();
    let received = count.load(Ordering::Relaxed);
    let caught = caught.map_or(0.0, |d| d.as_secs_f64());
    Ok((
        json!({
            "behind": behind,
            "acked_backlog": backlog.len(),
            "backfill_seconds": round3(fill_seconds),
            "events_received": received,
            "contiguous": contiguous,
            "other_events": other,
            "live_order_status": status,
            "first_event_ms": round1(first.map_or(0.0, |d| d.as_secs_f64() * 1000.0)),
            "caught_up_seconds": round3(caught),
            "live_seconds": round3(live.as_secs_f64()),
            "events_per_second": (behind as f64 / caught.max(1e-9)).round(),
            "gateway_cpu_cores": round3(usage.cpu_cores),
            "gateway_rss_peak_mib": round1(usage.rss_peak as f64 / 1048576.0),
        }),
        ready_seconds,
    ))
}
