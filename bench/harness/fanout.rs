//! Fan-out: N live streams spread over client processes while orders arrive at R/s.
//! Every client must receive every acknowledged order; latency runs from the POST's 202 (at
//! the harness) to the event's arrival (at the client), both on the machine's real-time clock.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::Res;
use super::hist::{Latency, round1, round3};
use super::procs::{Build, Gateway, rss_bytes};
use super::produce::{Load, OnAck, Target, open_loop};

/// Clients per process: one process holds ~9,000 connections (open-files limit 20,000).
pub(crate) const PER_PROCESS: usize = 5_000;

pub(crate) struct Plan {
    pub(crate) clients: usize,
    pub(crate) rate: u32,
    pub(crate) seconds: u64,
    /// Not the default: the tracker feed's fetch.wait.max.ms (see src/kafka/config.rs).
    pub(crate) feed_fetch_wait_ms: Option<u32>,
    pub(crate) build: Build,
}

pub(crate) struct ClientProcess {
    pub(crate) child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

#[allow(unsafe_code)]
pub(crate) fn spawn_clients(
    addr: std::net::SocketAddr,
    n: usize,
    slow_every: usize,
) -> Res<ClientProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--role", "stream-clients", "--addr", &addr.to_string()])
        .args(["--clients", &n.to_string()])
        .args(["--slow-every", &slow_every.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("client process without stdout")?;
    Ok(ClientProcess {
        child,
        lines: BufReader::new(stdout).lines(),
    })
}

/// Spreads `clients` streams over child processes (at least two, at most PER_PROCESS
/// streams each) and waits until each reports READY; returns them with the streams that
/// connected and that failed to.
pub(crate) async fn open_clients(
    addr: std::net::SocketAddr,
    clients: usize,
) -> Res<(Vec<ClientProcess>, u64, u64)> {
    let processes = clients.div_ceil(PER_PROCESS).max(2);
    let mut children = Vec::new();
    let mut left = clients;
    for i in 0..processes {
        let n = left / (processes - i);
        left -= n;
        children.push(spawn_clients(addr, n, 0)?);
    }
    let (mut connected, mut failed) = (0u64, 0u64);
    for c in &mut children {
        let ready = expect_line(c, "READY", Duration::from_secs(120)).await?;
        let v: Vec<u64> = ready
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        connected += v.first().copied().unwrap_or(0);
        failed += v.get(1).copied().unwrap_or(0);
    }
    Ok((children, connected, failed))
}

/// What the clients must have received, in the protocol of the `stream-clients` role:
/// how many orders, and each partition's first and last acknowledged offset.
pub(crate) fn expected_line(acked: &[super::produce::Acked]) -> String {
    let mut parts: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    for a in acked {
        let e = parts.entry(a.partition).or_insert((a.offset, a.offset));
        e.0 = e.0.min(a.offset);
        e.1 = e.1.max(a.offset);
    }
    let spec: Vec<String> = parts
        .iter()
        .map(|(p, (a, b))| format!("{p}:{a}:{b}"))
        .collect();
    format!("E {} {}\n", acked.len(), spec.join(" "))
}

/// Every client process's RESULT line, its counts summed field by field and its latencies
/// merged.
pub(crate) struct Results {
    sums: std::collections::HashMap<String, u64>,
    pub(crate) latency: Latency,
}

impl Results {
    pub(crate) fn get(&self, key: &str) -> u64 {
        self.sums.get(key).copied().unwrap_or(0)
    }
}

/// Reads each process's RESULT; `each` runs for every process right after (its CPU, say,
/// before it exits).
pub(crate) async fn collect_results(
    children: &mut [ClientProcess],
    mut each: impl FnMut(&ClientProcess),
) -> Res<Results> {
    let mut results = Results {
        sums: Default::default(),
        latency: Latency::new(),
    };
    for c in children.iter_mut() {
        let line = expect_line(c, "RESULT", super::sse::RESULT_WAIT).await?;
        let v: Value = serde_json::from_str(&line)?;
        for (key, n) in v.as_object().into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                *results.sums.entry(key.clone()).or_default() += n;
            }
        }
        results
            .latency
            .add(&Latency::decode(v["latency"].as_str().unwrap_or_default()));
        each(c);
    }
    Ok(results)
}

pub(crate) async fn expect_line(
    p: &mut ClientProcess,
    prefix: &str,
    timeout: Duration,
) -> Res<String> {
    let line = tokio::time::timeout(timeout, async {
        while let Some(line) = p.lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok::<_, std::io::Error>(Some(rest.trim().to_owned()));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| format!("no {prefix} from a client process within {timeout:?}"))??;
    line.ok_or_else(|| format!("a client process ended before {prefix}").into())
}

pub(crate) async fn run(bootstrap: &str, plan: &Plan, logs: &Path) -> Res<(Value, f64)> {
    let wait = plan.feed_fetch_wait_ms;
    let name = format!(
        "fanout-{}-{}{}-{}",
        plan.clients,
        plan.rate,
        wait.map_or(String::new(), |w| format!("-wait{w}")),
        plan.build.label()
    );
    eprintln!(
        "fan-out: {} streams, {} orders/s{} ({} build)",
        plan.clients,
        plan.rate,
        wait.map_or(String::new(), |w| format!(", feed fetch wait {w} ms")),
        plan.build.label()
    );
    let setting = wait.map(|w| format!("fetch.wait.max.ms={w}"));
    let env: Vec<(&str, &str)> = setting
        .iter()
        .map(|s| ("KAFKA_CONFIG", s.as_str()))
        .collect();
    let gateway = Gateway::start(plan.build, Some(bootstrap), &name, &env, logs).await?;
    let ready_seconds = gateway.ready_seconds;
    let pid = gateway.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_bytes(pid);

    let (mut children, connected, failed) = open_clients(gateway.addr, plan.clients).await?;
    let processes = children.len();
    // Let buffers settle before measuring what idle streams cost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_bytes(pid);
    let per_stream = rss_idle.saturating_sub(rss_before) as f64 / connected.max(1) as f64;
    eprintln!("  {connected} streams open ({failed} failed); {per_stream:.0} B per idle stream");

    // Acks go to every client process in the order they happened.
    let mut stdins: Vec<ChildStdin> = children
        .iter_mut()
        .filter_map(|c| c.child.stdin.take())
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            for s in &mut stdins {
                if s.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    let on_ack: OnAck = {
        let tx = tx.clone();
        Arc::new(move |a, at| {
            let _ = tx.send(format!("A {} {} {at}\n", a.partition, a.offset));
        })
    };
    let clients_cpu0: f64 = children
        .iter()
        .filter_map(|c| c.child.id())
        .map(super::procs::cpu_seconds)
        .sum();
    // Profiling: BENCH_PERF_DIR=dir samples the gateway during the measured window, and
    // counts its writes on the sockets: how well events are coalesced.
    let window = Duration::from_secs(plan.seconds);
    let record = super::procs::perf_record(pid, &name, window);
    let count = std::env::var("BENCH_PERF_DIR").ok().and_then(|dir| {
        std::process::Command::new("perf")
            .args([
                "stat",
                "-e",
                "syscalls:sys_enter_writev,syscalls:sys_enter_write",
            ])
            .arg("-o")
            .arg(format!("{dir}/{name}.syscalls.txt"))
            .args([
                "-p",
                &pid.to_string(),
                "--",
                "sleep",
                &plan.seconds.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    });
    let run = open_loop(
        &Target::Post(gateway.addr),
        plan.rate,
        Duration::ZERO,
        window,
        Some(pid),
        Some(on_ack),
    )
    .await?;
    for mut p in [record, count].into_iter().flatten() {
        let _ = p.wait();
    }
    let _ = tx.send(expected_line(&run.acked));
    drop(tx);
    writer.await?;

    let mut clients_cpu = 0.0;
    let results = collect_results(&mut children, |c| {
        if let Some(pid) = c.child.id() {
            clients_cpu += super::procs::cpu_seconds(pid);
        }
    })
    .await?;
    for c in &mut children {
        let _ = c.child.wait().await;
    }
    let complete = results.get("complete");
    let usage = run.usage;
    gateway.stop();
    let orders = run.acked.len() as u64;
    let result = json!({
        "clients": plan.clients,
        "client_processes": processes,
        "feed_fetch_wait_ms": wait,
        "build": plan.build.label(),
        "rate": plan.rate,
        "seconds": plan.seconds,
        "connected": connected,
        "connect_failed": failed,
        "orders": orders,
        "post_errors": run.errors,
        "post_latency": run.latency.summary(),
        "expected_events": orders * connected,
        "events": results.get("events"),
        "complete_clients": complete,
        "told_to_reconnect": results.get("told"),
        "silent_incomplete": results.get("silent_incomplete"),
        // Of those: clients that saw an offset skipped or repeated within a partition.
        "out_of_order": results.get("out_of_order"),
        "client_errors": results.get("errors"),
        "every_order_to_every_client": complete == connected && connected == plan.clients as u64,
        "events_before_ack": results.get("before_ack"),
        "e2e_latency": results.latency.summary(),
        "gateway_cpu_cores": usage.map(|u| round3(u.cpu_cores)),
        "gateway_rss_peak_mib": usage.map(|u| round1(u.rss_peak as f64 / 1048576.0)),
        "gateway_rss_idle_mib": round1(rss_idle as f64 / 1048576.0),
        "bytes_per_idle_stream": per_stream.round(),
        "client_cpu_seconds": round1(clients_cpu - clients_cpu0),
        "load": match run.load { Load::Rate(r) => r, Load::Concurrency(_) => 0 },
    });
    Ok((result, ready_seconds))
}
