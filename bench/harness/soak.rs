//! Soak: minutes of mixed load (steady POSTs, 500 streams of which some read deliberately
//! slowly), the gateway's RSS every 10 s, and at the end the proof that every acknowledged
//! order is on the topic and reached every stream that kept up.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::Res;
use super::fanout::{expect_line, expected_line, spawn_clients};
use super::hist::{Latency, round1, round3};
use super::procs::{Broker, Build, Gateway, cpu_seconds, rss_bytes};
use super::produce::{OnAck, Target, open_loop, verify};

const RATE: u32 = 200;
const STREAMS: usize = 500;
/// Every 10th stream reads 2 KiB every 200 ms: far slower than 200 orders/s (~58 KB/s).
const SLOW_EVERY: usize = 10;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub(crate) async fn run(minutes: f64, out: &Path, name: &str) -> Res<()> {
    let logs = out.join(format!("{name}-logs"));
    std::fs::create_dir_all(&logs)?;
    let broker = Broker::start(&logs, "soak")?;
    let gateway =
        Gateway::start(Build::Current, Some(&broker.bootstrap), "soak", &[], &logs).await?;
    let pid = gateway.pid();
    let seconds = Duration::from_secs_f64(minutes * 60.0);
    eprintln!(
        "soak: {minutes} min, {RATE} orders/s, {STREAMS} streams (every {SLOW_EVERY}th slow)"
    );

    let mut clients = spawn_clients(gateway.addr, STREAMS, SLOW_EVERY)?;
    let ready = expect_line(&mut clients, "READY", Duration::from_secs(60)).await?;
    eprintln!("  streams open: {ready}");
    let mut stdin = clients
        .child
        .stdin
        .take()
        .ok_or("client process without stdin")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if stdin.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let on_ack: OnAck = {
        let tx = tx.clone();
        Arc::new(move |a, at| {
            let _ = tx.send(format!("A {} {} {at}\n", a.partition, a.offset));
        })
    };

    let samples: Arc<Mutex<Vec<Value>>> = Arc::default();
    let t0 = Instant::now();
    let sampler = tokio::spawn({
        let samples = samples.clone();
        async move {
            let mut cpu = cpu_seconds(pid);
            let mut at = Instant::now();
            loop {
                let now = Instant::now();
                let used = cpu_seconds(pid);
                let cores = (used - cpu) / now.duration_since(at).as_secs_f64().max(1e-9);
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(json!({
                        "t": round1(t0.elapsed().as_secs_f64()),
                        "rss_mib": round1(rss_bytes(pid) as f64 / 1048576.0),
                        "cpu_cores": round3(cores),
                    }));
                (cpu, at) = (used, now);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }
    });
    let run = open_loop(
        &Target::Post(gateway.addr),
        RATE,
        Duration::ZERO,
        seconds,
        Some(pid),
        Some(on_ack),
    )
    .await?;
    sampler.abort();
    let _ = tx.send(expected_line(&run.acked));
    drop(tx);
    writer.await?;
    let result: Value =
        serde_json::from_str(&expect_line(&mut clients, "RESULT", super::sse::RESULT_WAIT).await?)?;
    let _ = clients.child.wait().await;
    let latency = Latency::decode(result["latency"].as_str().unwrap_or_default());
    let (bootstrap, topic, acked) = (
        broker.bootstrap.clone(),
        gateway.topic.clone(),
        run.acked.clone(),
    );
    let verified =
        tokio::task::spawn_blocking(move || verify(&bootstrap, &topic, &acked)).await??;
    let rss_end = rss_bytes(pid);
    gateway.stop();

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let rss: Vec<f64> = samples
        .iter()
        .map(|s| s["rss_mib"].as_f64().unwrap_or(0.0))
        .collect();
    // Growth after warm-up: the second half's mean against the first sample after a minute.
    let settled = rss
        .get(6.min(rss.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let report = json!({
        "name": name,
        "mode": "soak",
        "minutes": minutes,
        "rate": RATE,
        "streams": STREAMS,
        "slow": STREAMS / SLOW_EVERY,
        "orders": run.acked.len(),
        "post_errors": run.errors,
        "post_latency": run.latency.summary(),
        "fast_clients": result["clients"],
        "fast_complete": result["complete"],
        "fast_told": result["told"],
        "silent_incomplete": result["silent_incomplete"],
        "slow_told": result["slow_told"],
        "slow_reconnects": result["slow_reconnects"],
        "slow_events": result["slow_events"],
        "events": result["events"],
        "e2e_latency": latency.summary(),
        "verified": verified.to_json(),
        "rss_first_mib": rss.first(),
        "rss_after_1min_mib": settled,
        "rss_max_mib": rss.iter().copied().fold(0.0, f64::max),
        "rss_end_mib": round1(rss_end as f64 / 1048576.0),
        "gateway_cpu_cores": run.usage.map(|u| round3(u.cpu_cores)),
        "samples": samples,
    });
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    let mut summary = report.clone();
    if let Some(m) = summary.as_object_mut() {
        m.remove("samples");
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    let fine = verified.lost == 0
        && verified.duplicated == 0
        && verified.acked > 0
        && result["silent_incomplete"].as_u64() == Some(0)
        && result["complete"] == result["clients"];
    if fine {
        Ok(())
    } else {
        Err(
            "soak: an acknowledged order was lost, duplicated, or missed by a stream that kept up"
                .into(),
        )
    }
}
