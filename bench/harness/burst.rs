//! Catch-up burst (issue 11): live streams, then a stall of the gateway (SIGSTOP) while
//! orders are written straight to the topic, then its tracker catches up and hands them all
//! to the hub at once. Who got every order, who was told `overflow`, what it cost.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use super::Res;
use super::fanout::{collect_results, expected_line, open_clients};
use super::hist::{round1, round3};
use super::http::metric;
use super::procs::{Build, Gateway, Usage, now_us, rss_bytes};
use super::produce::{backfill, raw_producer};

/// STREAM_BUFFER before issue 11: every live client overflowed after a stall of more
/// orders than that.
pub(crate) const OLD_BUFFER: usize = 1024;

/// One burst: `clients` live streams, `orders` written while the gateway is stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) clients: usize,
    pub(crate) orders: usize,
    /// STREAM_BUFFER for this gateway; `None`: the gateway's default.
    pub(crate) buffer: Option<usize>,
}

/// The gateway's own STREAM_BUFFER default, read from its `--help`: the table then names
/// the value measured, not the one this harness remembers.
pub(crate) fn default_buffer() -> Res<usize> {
    let out = std::process::Command::new(Build::Current.binary()?)
        .arg("--help")
        .env_remove("STREAM_BUFFER")
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    let after = help
        .split_once("--stream-buffer")
        .map(|(_, rest)| rest)
        .ok_or("no --stream-buffer in the gateway's --help")?;
    let value = after
        .split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(v, _)| v)
        .ok_or("no default for --stream-buffer in the gateway's --help")?;
    Ok(value.parse()?)
}

/// Runs one burst on a gateway of its own; `default` is the gateway's STREAM_BUFFER default.
pub(crate) async fn run(
    bootstrap: &str,
    plan: Plan,
    default: usize,
    logs: &Path,
) -> Res<(Value, f64)> {
    // BENCH_GATEWAY_ENV is applied after the plan's settings, so it wins.
    let overridden = std::env::var("BENCH_GATEWAY_ENV")
        .unwrap_or_default()
        .split(';')
        .find_map(|kv| kv.strip_prefix("STREAM_BUFFER=")?.parse().ok());
    let buffer = overridden.or(plan.buffer).unwrap_or(default);
    let name = format!("burst-{}-{}-b{buffer}", plan.clients, plan.orders);
    eprintln!(
        "burst: {} streams, {} orders during a stall, STREAM_BUFFER {buffer}{}",
        plan.clients,
        plan.orders,
        if buffer == default { " (default)" } else { "" }
    );
    let setting = plan.buffer.map(|b| b.to_string());
    let env: Vec<(&str, &str)> = setting
        .iter()
        .map(|b| ("STREAM_BUFFER", b.as_str()))
        .collect();
    let gateway = Gateway::start(Build::Current, Some(bootstrap), &name, &env, logs).await?;
    let (pid, addr) = (gateway.pid(), gateway.addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = rss_bytes(pid);

    let (mut children, connected, failed) = open_clients(addr, plan.clients).await?;
    let processes = children.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_bytes(pid);
    let per_stream = rss_idle.saturating_sub(rss_start) as f64 / connected.max(1) as f64;

    // The stall: the whole gateway stops (as in a long GC-like pause, a frozen VM, a
    // throttled container); another replica or producer keeps writing orders.
    let producer = raw_producer(bootstrap)?;
    gateway.signal(libc::SIGSTOP)?;
    let stopped = Instant::now();
    let filled = backfill(&producer, &gateway.topic, plan.orders).await;
    // Tansu answers a waiting fetch at its deadline; let it pass so the gateway finds the
    // whole backlog when it wakes, as after a stall longer than a fetch.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stall_seconds = stopped.elapsed().as_secs_f64();
    let usage = Usage::start(pid);
    let resumed_us = now_us();
    let resumed = Instant::now();
    gateway.signal(libc::SIGCONT)?;
    let acked = filled?;

    // How long the tracker took to hand the backlog to the hub.
    let handed = Arc::new(AtomicU64::new(0));
    let poll = tokio::spawn({
        let (handed, total) = (handed.clone(), acked.len() as f64);
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let read = metric(addr, "orders_gateway_tracker_records_total")
                    .await
                    .unwrap_or(0.0);
                if read >= total {
                    let us = resumed.elapsed().as_micros() as u64;
                    handed.store(us, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // Every order's "ack" is the moment the gateway resumed: latency is time since then.
    let mut stdins: Vec<ChildStdin> = children
        .iter_mut()
        .filter_map(|c| c.child.stdin.take())
        .collect();
    let mut lines = String::with_capacity(acked.len() * 32);
    for a in &acked {
        let _ = writeln!(lines, "A {} {} {resumed_us}", a.partition, a.offset);
    }
    lines += &expected_line(&acked);
    for s in &mut stdins {
        s.write_all(lines.as_bytes()).await?;
        s.flush().await?;
    }

    let results = collect_results(&mut children, |_| {}).await?;
    let get = |key| results.get(key);
    let (complete, told, silent) = (get("complete"), get("told"), get("silent_incomplete"));
    let (out_of_order, events, errors) = (get("out_of_order"), get("events"), get("errors"));
    let latency = &results.latency;
    let settled = resumed.elapsed().as_secs_f64();
    let usage = usage.finish();
    let overflows = metric(addr, "orders_gateway_stream_overflows_total")
        .await
        .unwrap_or(0.0);
    let _ = tokio::time::timeout(Duration::from_secs(5), poll).await;
    for c in &mut children {
        let _ = c.child.wait().await;
    }
    // The clients are gone; the hub still holds its replay window (STREAM_REPLAY).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = rss_bytes(pid);
    let ready_seconds = gateway.ready_seconds;
    gateway.stop();

    let handed_us = handed.load(Ordering::Relaxed);
    let orders = acked.len() as u64;
    let mib = |b: u64| round1(b as f64 / 1048576.0);
    let result = json!({
        "clients": plan.clients,
        "client_processes": processes,
        "orders": plan.orders,
        "acked": orders,
        "stream_buffer": buffer,
        "is_default": buffer == default,
        "connected": connected,
        "connect_failed": failed,
        "stall_seconds": round3(stall_seconds),
        "handed_to_hub_seconds": (handed_us > 0).then(|| round3(handed_us as f64 / 1e6)),
        "expected_events": orders * connected,
        "events": events,
        "complete_clients": complete,
        "told_overflow": told,
        "gateway_overflows": overflows as u64,
        "silent_incomplete": silent,
        "out_of_order": out_of_order,
        "client_errors": errors,
        // From the moment the gateway resumed to each order at each client; the max is the
        // last order at the last client.
        "delivery": latency.summary(),
        "all_delivered_seconds": round3(latency.ms(1.0) / 1000.0),
        "settled_seconds": round3(settled),
        "gateway_cpu_cores": round3(usage.cpu_cores),
        "gateway_rss_start_mib": mib(rss_start),
        "gateway_rss_idle_mib": mib(rss_idle),
        "gateway_rss_peak_mib": mib(usage.rss_peak),
        "gateway_rss_end_mib": mib(rss_end),
        "gateway_rss_bytes": {
            "start": rss_start, "idle": rss_idle, "peak": usage.rss_peak, "end": rss_end,
        },
        "bytes_per_idle_stream": per_stream.round(),
    });
    Ok((result, ready_seconds))
}

/// Slots of the probe's buffer: large enough that their cost stands out of the noise
/// between two processes' RSS (a few hundred KiB).
const PROBE_SLOTS: usize = 1 << 20;

/// What the buffer costs in memory, measured apart from any burst: an empty slot (the RSS
/// of an idle gateway with a [`PROBE_SLOTS`] buffer against one with the old 1,024), and
/// an order held in memory (the RSS growth of a gateway whose hub keeps STREAM_REPLAY
/// orders, with one client that received and so rendered them all). A slot holds its
/// order only while some client has not read it; an order within the last STREAM_REPLAY
/// is kept for replays anyway, so a buffer larger than that costs the difference in
/// orders while a client lags.
pub(crate) async fn memory(bootstrap: &str, logs: &Path) -> Res<Value> {
    eprintln!("burst: memory of a buffer slot and of a kept order");
    let (small, large) = (OLD_BUFFER.to_string(), PROBE_SLOTS.to_string());
    let a = Gateway::start(
        Build::Current,
        Some(bootstrap),
        "slots-small",
        &[("STREAM_BUFFER", &small)],
        logs,
    )
    .await?;
    let b = Gateway::start(
        Build::Current,
        Some(bootstrap),
        "slots-large",
        &[("STREAM_BUFFER", &large)],
        logs,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_small, rss_large) = (rss_bytes(a.pid()), rss_bytes(b.pid()));
    b.stop();
    let per_slot = (rss_large as f64 - rss_small as f64) / (PROBE_SLOTS - OLD_BUFFER) as f64;

    // The replay window of `a` (STREAM_REPLAY, default 10,000) filled by the tracker,
    // every order rendered by one client that reads them all.
    let kept = 10_000;
    let addr = a.addr;
    let client = tokio::spawn(async move {
        let mut n = 0usize;
        super::sse::stream(addr, "/orders/stream", "", |block, _| {
            if matches!(super::sse::kind(block), super::sse::Block::Order { .. }) {
                n += 1;
            }
            if n >= kept {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await
        .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes(a.pid());
    let producer = raw_producer(bootstrap)?;
    backfill(&producer, &a.topic, kept).await?;
    tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .map_err(|_| "the probe's client did not get the orders within 60 s")???;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(a.pid());
    a.stop();
    Ok(json!({
        "probe_slots": PROBE_SLOTS,
        "compared_with": OLD_BUFFER,
        "rss_small_mib": round1(rss_small as f64 / 1048576.0),
        "rss_large_mib": round1(rss_large as f64 / 1048576.0),
        "bytes_per_empty_slot": round1(per_slot),
        "kept_orders": kept,
        "bytes_per_kept_order": (after.saturating_sub(before) as f64 / kept as f64).round(),
    }))
}
