//! Soak: mixed load for minutes; RSS over time.

use std::net::SocketAddr;
use std::path::Path;

use super::Res;

pub(crate) async fn run(_minutes: f64, _out: &Path, _name: &str) -> Res<()> {
    Err("soak: not yet".into())
}

pub(crate) fn child_main(_addr: SocketAddr, _n: usize, _slow_every: usize) -> Res<()> {
    Err("soak: not yet".into())
}
