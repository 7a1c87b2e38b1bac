//! The frame proxy as a library user writes it: switchboard's forwarder, driven by a route table, and a
//! tonic health service behind one listener. Every call other than a health check goes to the backend the
//! routes name, relayed frame by frame without being decoded.
//!
//! ```text
//! cargo run --example frame_proxy -- --backend 127.0.0.1:50051     # one route: every call to the backend
//! cargo run --example frame_proxy -- --routes routes.yaml          # GrpcRoute documents, reloaded on change
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchboard::proxy::{shutdown_signal, Forwarder, PoolSettings, Pools, Routes, Server, TowerHandler};
use switchboard::standalone::{self, FileError};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "switchboard's frame forwarder, embedded as a library")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FRAME_PROXY_LISTEN", default_value = "127.0.0.1:50080")]
    listen: SocketAddr,
    /// Where every call goes, as HOST:PORT (ignored with --routes).
    #[arg(long, env = "FRAME_PROXY_BACKEND", default_value = "127.0.0.1:50051", value_parser = host_port)]
    backend: (String, u16),
    /// A file of GrpcRoute documents to route by instead of --backend; reloaded when it changes.
    #[arg(long, env = "FRAME_PROXY_ROUTES")]
    routes: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::Level::INFO.into())
                .from_env_lossy(),
        )
        .init();
    let args = Args::parse();
    let routes = match &args.routes {
        Some(path) => {
            let routes = routes(path, &std::fs::read_to_string(path)?)?;
            // A changed file becomes a new table; calls in flight keep the one they started with.
            tokio::spawn(standalone::watch(path.clone(), routes.clone(), Duration::from_secs(1)));
            routes
        }
        None => routes(Path::new("--backend"), &catch_all(&args.backend.0, args.backend.1))?,
    };
    let listener = TcpListener::bind(args.listen).await?;
    let listener_addr = listener.local_addr()?;
    let (trigger, shutdown) = shutdown_signal();
    let serving = tokio::spawn(server(routes).serve(listener, shutdown));
    tracing::info!(listen = %listener_addr, "frame proxy serving");
    tokio::signal::ctrl_c().await?;
    // Drain: GOAWAY to clients, then wait for the calls in flight.
    trigger.trigger();
    serving.await??;
    Ok(())
}

/// A route sending every call to `host:port`: a GrpcRoute rule without matches matches every method.
pub fn catch_all(host: &str, port: u16) -> String {
    format!(
        r#"apiVersion: switchboard.dev/v1alpha1
kind: GrpcRoute
metadata: {{name: everything}}
spec:
  rules:
    - backendRefs: [{{name: "{host}", port: {port}}}]
"#
    )
}

/// The routes in `yaml` (GrpcRoute documents; `source` names them in errors) as the forwarder's table.
pub fn routes(source: &Path, yaml: &str) -> Result<Arc<Routes>, FileError> {
    let (table, reports) = standalone::build_table(&standalone::parse_routes(source, yaml)?);
    standalone::log_reports(&reports);
    // Backend connections live in the pools and outlast table swaps.
    let routes = Arc::new(Routes::new(Pools::new(PoolSettings::default())));
    routes.swap(table);
    Ok(routes)
}

/// The proxy: the health service by name, every other method to the forwarder.
pub fn server(routes: Arc<Routes>) -> Server {
    // The reporter could mark the server NOT_SERVING while draining; here the health status stays SERVING.
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::new(Forwarder::new(routes)).service("grpc.health.v1.Health", TowerHandler(health))
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}
