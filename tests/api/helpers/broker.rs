//! Real Kafka-compatible broker processes (Tansu) for the integration tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A Tansu process on a loopback port. Killed on drop, and by the kernel if the test
/// process dies first, so no broker outlives its test run.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    /// The port the broker tells clients to connect to: its own, or a proxy's in front of it.
    advertised: u16,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` (a port a gateway may already be trying to reach).
    pub fn start_on(port: u16) -> Self {
        Self::start_advertising(port, port)
    }

    /// Starts a broker on a free port that sends its clients to `advertised`, where a
    /// proxy forwards to it: every client connection then crosses the proxy.
    pub fn start_behind(advertised: u16) -> Self {
        Self::start_advertising(free_port(), advertised)
    }

    fn start_advertising(port: u16, advertised: u16) -> Self {
        let mut broker = Self {
            child: None,
            port,
            advertised,
        };
        broker.restart();
        broker
    }

    /// The port the broker itself listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, for KAFKA_BOOTSTRAP_SERVERS.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker; its in-memory data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (empty: Tansu keeps data in memory).
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::File::create(log_dir().join(format!("tansu-{}.log", self.port)))
            .expect("create broker log");
        let mut command = Command::new(tansu_binary());
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect("start tansu"));
        wait_for_port(self.port, Duration::from_secs(20));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One broker shared by every test of this binary that does not stop its broker.
/// Tests share it safely because each uses its own topic and group.
pub fn shared() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so the shared broker is
        // spawned from a thread that lives as long as the process.
        std::thread::spawn(move || {
            let broker = Broker::start();
            tx.send(broker.bootstrap()).expect("report shared broker");
            loop {
                std::thread::park();
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("shared broker started")
    })
}

/// Installs Tansu with the project's own script when it is missing; never skips.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join(".tools/tansu/tansu");
    static INSTALL: OnceLock<()> = OnceLock::new();
    INSTALL.get_or_init(|| {
        if bin.exists() {
            return;
        }
        let status = Command::new("bash")
            .arg(root.join("scripts/install-tansu.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/install-tansu.sh");
        assert!(
            status.success(),
            "scripts/install-tansu.sh failed: cannot start the test broker"
        );
    });
    bin
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("brokers");
    std::fs::create_dir_all(&dir).expect("create broker log dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, timeout: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "broker did not listen on {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks the kernel to kill the child when the thread that spawned it exits.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command) {
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
