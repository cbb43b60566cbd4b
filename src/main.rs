//! The `orders-gateway` binary: parse config, set up logs, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use orders_gateway::{Config, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse().with_kafka_env(std::env::vars());
    if let Err(message) = config.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    telemetry::init(&config.log_filter, config.log_format);
    let listener = match TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %config.listen_addr, error = %e, "cannot listen (LISTEN_ADDR)");
            return ExitCode::FAILURE;
        }
    };
    match orders_gateway::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "orders-gateway failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (docker stop, Kubernetes).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
