//! The `orders-gateway` binary as a child process, as operators run it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::broker::{die_with_parent, free_port};
use super::order;

pub struct Gateway {
    child: Child,
    pub base: String,
    /// Where the gateway's stdout and stderr go.
    pub log: std::path::PathBuf,
}

impl Gateway {
    /// Runs the binary with `env`; `KAFKA_BOOTSTRAP_SERVERS` only if given.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), env)
    }

    /// Runs the binary listening on `port`.
    pub fn start_on(port: u16, env: &[(&str, &str)]) -> Self {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gateways");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("gateway-{port}.log"));
        let out = std::fs::File::create(&log).expect("gateway log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_orders-gateway"));
        command
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_TOPIC", crate::helpers::unique("orders"))
            .env("TRACKER_GROUP_ID", crate::helpers::unique("tracker"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        die_with_parent(&mut command);
        Self {
            child: command.spawn().expect("start gateway"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub async fn wait_ready(&self, http: &reqwest::Client, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "gateway not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Places a valid order.
    pub async fn post_order(&self, http: &reqwest::Client) -> reqwest::Response {
        let url = format!("{}/orders", self.base);
        http.post(url)
            .json(&order("lara"))
            .send()
            .await
            .expect("POST /orders")
    }

    /// Asks the gateway to stop, as an orchestrator does.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills the gateway at once: no drain, no flush.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Freezes the gateway (SIGSTOP): it sends, probes and notices nothing until `resume`.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused gateway run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        #[allow(unsafe_code)]
        // SAFETY: sending a signal has no memory effects in this process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// How the gateway ended, if it did (a crash shows as a signal).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "gateway did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test that failed because the gateway died says so ("connection refused" alone
        // does not), with the end of its log.
        if std::thread::panicking()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "the gateway had exited ({status}); the end of {}:",
                self.log.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
