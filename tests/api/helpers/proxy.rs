//! A TCP proxy between the gateway and its broker that can cut every connection and refuse
//! new ones, then heal: a broker that is unreachable for a while but keeps its data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

pub struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<JoinSet<()>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Forwards `127.0.0.1:port` to `127.0.0.1:target`.
    pub async fn start(port: u16, target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let up = Arc::new(AtomicBool::new(true));
        let pipes = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (up, pipes) = (up.clone(), pipes.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    // While cut, a connection is closed as soon as it is made.
                    if !up.load(Ordering::SeqCst) {
                        continue;
                    }
                    pipes.lock().await.spawn(async move {
                        if let Ok(mut broker) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                        }
                    });
                }
            }
        });
        Self {
            port,
            up,
            pipes,
            accept,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every open connection and refuses new ones until `heal`.
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.pipes.lock().await.abort_all();
    }

    pub fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
