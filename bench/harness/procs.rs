//! Child processes of the harness (the Tansu broker, gateways) and what /proc says about them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::Res;
use super::http::get_status;

pub(crate) fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Asks the kernel to kill the child when the harness dies, so no broker or gateway outlives
/// an interrupted run. PR_SET_PDEATHSIG fires when the spawning *thread* exits: every child
/// is spawned from the main thread, which lives as long as the run.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child killed on drop.
pub(crate) struct Owned(pub(crate) Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Tansu broker (memory storage) on a loopback port.
pub(crate) struct Broker {
    _child: Owned,
    pub(crate) bootstrap: String,
}

impl Broker {
    pub(crate) fn start(logs: &Path, name: &str) -> Res<Self> {
        let bin = std::env::var("TANSU_BIN")
            .map_err(|_| "TANSU_BIN is not set: run the harness with scripts/bench.sh")?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(logs.join(format!("tansu-{name}.log")))?;
        let mut command = Command::new(bin);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        let child = Owned(command.spawn()?);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err("Tansu did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            _child: child,
            bootstrap: format!("127.0.0.1:{port}"),
        })
    }
}

/// Which gateway binary a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// This checkout's release build.
    Current,
    /// An older build (`BENCH_BASELINE_BIN`, set by `scripts/bench.sh --baseline REV`),
    /// measured in the same run on the same machine, so before and after compare.
    Baseline,
}

impl Build {
    pub(crate) fn binary(self) -> Res<PathBuf> {
        match self {
            Build::Current => Ok(PathBuf::from(env!("CARGO_BIN_EXE_orders-gateway"))),
            Build::Baseline => std::env::var_os("BENCH_BASELINE_BIN")
                .map(PathBuf::from)
                .ok_or_else(|| "BENCH_BASELINE_BIN is not set".into()),
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Build::Current => "current",
            Build::Baseline => "baseline",
        }
    }
}

/// A gateway process, started by the harness with its default settings except the ones
/// given (a fresh topic and group per gateway).
pub(crate) struct Gateway {
    child: Owned,
    pub(crate) addr: SocketAddr,
    /// Seconds from spawn to the first 200 from /readyz.
    pub(crate) ready_seconds: f64,
    pub(crate) topic: String,
}

impl Gateway {
    /// `bootstrap` None: the embedded broker.
    pub(crate) async fn start(
        build: Build,
        bootstrap: Option<&str>,
        name: &str,
        env: &[(&str, &str)],
        logs: &Path,
    ) -> Res<Self> {
        let port = free_port()?;
        let topic = format!("orders-{name}-{}", uuid::Uuid::new_v4().simple());
        let log = std::fs::File::create(logs.join(format!("gateway-{name}.log")))?;
        let mut command = Command::new(build.binary()?);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_TOPIC", &topic)
            .env("TRACKER_GROUP_ID", format!("tracker-{topic}"))
            // One line per request at info level costs the gateway CPU that no production
            // deployment at this rate would pay to a local file; warnings are still logged.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(bootstrap) = bootstrap {
            command.env("KAFKA_BOOTSTRAP_SERVERS", bootstrap);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        // Experiments: BENCH_GATEWAY_ENV="K=V;K=V" adds settings to every gateway started.
        let extra = std::env::var("BENCH_GATEWAY_ENV").unwrap_or_default();
        for (k, v) in extra.split(';').filter_map(|kv| kv.split_once('=')) {
            command.env(k, v);
        }
        die_with_parent(&mut command);
        let started = Instant::now();
        let child = Owned(command.spawn()?);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Ok(200) = get_status(addr, "/readyz").await {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("gateway {name} not ready within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            child,
            addr,
            ready_seconds: started.elapsed().as_secs_f64(),
            topic,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends `signal` to the gateway (SIGSTOP and SIGCONT stage a stall).
    pub(crate) fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: plain syscall on our own child's pid.
        if unsafe { libc::kill(self.pid() as libc::pid_t, signal) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops the gateway the way an orchestrator does (SIGTERM), waiting up to 15 s.
    pub(crate) fn stop(mut self) {
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.0.kill();
    }
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; fields are counted after its closing paren.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, so utime (14) and stime (15) are at 11, 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// Resident set size in bytes.
pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// CPU and memory of one process over a measured window: started with [`Usage::start`],
/// RSS sampled every 100 ms until [`Usage::finish`].
pub(crate) struct Usage {
    pid: u32,
    cpu0: f64,
    t0: Instant,
    peak: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct UsageReport {
    /// Cores used on average: 1.0 is one core busy all the window.
    pub(crate) cpu_cores: f64,
    pub(crate) rss_peak: u64,
    pub(crate) rss_end: u64,
}

impl Usage {
    pub(crate) fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let sampler = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                }
            }
        });
        Self {
            pid,
            cpu0: cpu_seconds(pid),
            t0: Instant::now(),
            peak,
            sampler,
        }
    }

    pub(crate) fn finish(self) -> UsageReport {
        self.sampler.abort();
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let rss_end = rss_bytes(self.pid);
        UsageReport {
            cpu_cores: (cpu_seconds(self.pid) - self.cpu0) / wall,
            rss_peak: self.peak.load(Ordering::Relaxed).max(rss_end),
            rss_end,
        }
    }
}

/// Microseconds since the Unix epoch. The harness and its client processes run on one
/// machine, so this clock compares across them.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Profiling: `BENCH_PERF_DIR=dir` samples the gateway for `window` into
/// `dir/<name>.perf.data`. `BENCH_PERF_CALLGRAPH=dwarf` unwinds with DWARF instead of frame
/// pointers: slower and larger, but Rust frames without frame pointers get their callers.
pub(crate) fn perf_record(pid: u32, name: &str, window: Duration) -> Option<std::process::Child> {
    let dir = std::env::var("BENCH_PERF_DIR").ok()?;
    let call_graph = std::env::var("BENCH_PERF_CALLGRAPH").unwrap_or_else(|_| "fp".into());
    std::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "999",
            "--call-graph",
            &call_graph,
            "-o",
        ])
        .arg(format!("{dir}/{name}.perf.data"))
        .args(["-p", &pid.to_string(), "--", "sleep"])
        .arg(window.as_secs_f64().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}
