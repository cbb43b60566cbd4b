//! The `orders-gateway` binary: parse config, set up logs, run until a signal.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use orders_gateway::{Config, telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "orders-gateway", version, about, long_about = None, args_conflicts_with_subcommands = false)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OpenAPI document (regenerate the committed copy with
    /// `cargo run -- openapi > openapi/openapi.json`).
    Openapi,
    /// Probe /readyz of the gateway listening on LISTEN_ADDR's port on this host; exit 0 when
    /// ready, 1 otherwise. For container health checks, so images need no curl.
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.with_kafka_env(std::env::vars());
    match cli.command {
        Some(Command::Openapi) => {
            print!("{}", orders_gateway::http::docs::openapi_json());
            return ExitCode::SUCCESS;
        }
        Some(Command::Healthcheck) => return healthcheck(config.listen_addr.port()).await,
        None => {}
    }
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

/// A minimal HTTP/1.1 GET of /readyz on 127.0.0.1: the image carries no curl.
async fn healthcheck(port: u16) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!("not ready: /readyz did not answer 200");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("not ready: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("not ready: /readyz did not answer within 3 s");
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
