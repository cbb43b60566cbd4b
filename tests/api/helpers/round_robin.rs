//! A TCP round-robin balancer on loopback, as simple as a load balancer gets: no session
//! affinity, no HTTP awareness, a dead backend skipped only because connecting to it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long a connect to a backend may take before it counts as failed (a loopback connect
/// to a dead process is refused at once; this only bounds a stuck one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RoundRobin {
    port: u16,
    /// Connections handed to each backend, in the order of `backends`.
    handed: Arc<Vec<AtomicUsize>>,
    /// Connects that failed, so the next backend in turn was tried.
    skipped: Arc<AtomicUsize>,
    /// Owns every pipe (in its `JoinSet`): aborting it closes them all.
    accept: JoinHandle<()>,
}

impl RoundRobin {
    /// Listens on a free loopback port and hands each new connection to the next of the
    /// `backends` (loopback ports) in turn.
    pub async fn start(backends: &[u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let backends: Arc<[u16]> = backends.into();
        let handed: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let skipped = Arc::new(AtomicUsize::new(0));
        let turn = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (handed, skipped) = (handed.clone(), skipped.clone());
            async move {
                let mut pipes = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    // Reap finished pipes so the set stays as large as the open connections.
                    while pipes.try_join_next().is_some() {}
                    let (backends, turn) = (backends.clone(), turn.clone());
                    let (handed, skipped) = (handed.clone(), skipped.clone());
                    pipes.spawn(async move {
                        let Some((i, backend)) = connect(&backends, &turn, &skipped).await else {
                            return; // Every backend refused: the client sees its connection close.
                        };
                        handed[i].fetch_add(1, Ordering::SeqCst);
                        pipe(client, backend).await;
                    });
                }
            }
        });
        Self {
            port,
            handed,
            skipped,
            accept,
        }
    }

    /// `http://127.0.0.1:port`, the base URL clients use.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections handed to each backend so far.
    pub fn handed(&self) -> Vec<usize> {
        self.handed
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }

    /// Connects that failed (a dead backend skipped) so far.
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::SeqCst)
    }
}

/// Connects to the backend whose turn it is, moving on to the next while a connect fails,
/// each backend tried at most once. A failed backend takes its turn from the shared
/// counter, so the survivors keep alternating instead of the one after it taking two turns.
async fn connect(
    backends: &[u16],
    turn: &AtomicUsize,
    skipped: &AtomicUsize,
) -> Option<(usize, TcpStream)> {
    for _ in 0..backends.len() {
        let i = turn.fetch_add(1, Ordering::SeqCst) % backends.len();
        let connect = TcpStream::connect(("127.0.0.1", backends[i]));
        if let Ok(Ok(backend)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            return Some((i, backend));
        }
        skipped.fetch_add(1, Ordering::SeqCst);
    }
    None
}

/// Copies bytes both ways until either side closes; then both are closed, so a client of
/// a killed backend sees its connection end, as behind a real balancer.
async fn pipe(mut client: TcpStream, mut backend: TcpStream) {
    // Small SSE frames should not wait for Nagle's algorithm on their way through.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
