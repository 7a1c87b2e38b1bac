//! Wires the parts together for each subcommand.

use std::sync::Arc;

use kube::CustomResourceExt;
use tokio::net::TcpListener;

use crate::admin::{self, Readiness};
use crate::config::{ExplainArgs, LogFormat, RunArgs};
use crate::crd::GrpcRoute;
use crate::metrics::Metrics;
use crate::proxy::{shutdown_signal, Forwarder, Pools, Routes, Server, TowerHandler};
use crate::table::{CallInfo, Verdict};
use crate::{controller, standalone};

/// A failure that ends the process: printed as one line, exit code 2 for bad input.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// A bad flag value or unusable file.
    #[error("{0}")]
    Usage(String),
    /// Anything else.
    #[error("{0}")]
    Runtime(String),
}

impl Fatal {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            Self::Runtime(_) => 1,
        }
    }
}

/// Sets up logging.
pub fn init_tracing(filter: &str, format: LogFormat) -> Result<(), Fatal> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| Fatal::Usage(format!("invalid --log filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// `switchboard run`: serve until SIGTERM or SIGINT, then drain.
pub async fn run(args: RunArgs) -> Result<(), Fatal> {
    let nofile = raise_nofile_limit(args.max_client_connections);
    let (health, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health);
    let metrics = Metrics::new();
    let pools = Pools::new(args.pool_settings()).with_metrics(metrics.pool());
    let routes = Arc::new(
        Routes::with_metrics(pools, metrics.clone()).max_methods_per_service(args.max_methods_per_service as usize),
    );
    // Standalone: the file must load before we listen. Cluster: readiness waits for the first sync.
    let client = match &args.routes {
        Some(path) => {
            let rules = standalone::load(path, &routes).map_err(|e| Fatal::Usage(e.to_string()))?;
            tracing::info!(routes = %path.display(), rules, "standalone mode");
            None
        }
        None => Some(
            kube::Client::try_default()
                .await
                .map_err(|e| Fatal::Usage(format!("no --routes file and no Kubernetes configuration: {e}")))?,
        ),
    };

    if let (Some(cert), Some(key)) = (&args.backend_tls_client_cert, &args.backend_tls_client_key) {
        crate::tls::load_client_cert(cert, key)
            .map_err(|e| Fatal::Usage(format!("backend TLS client certificate: {e}")))?;
    }
    let tls = match args.server_tls_files() {
        Some(files) => Some(Arc::new(crate::tls::ServerTls::load(files).map_err(|e| Fatal::Usage(e.to_string()))?)),
        None => None,
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Fatal::Runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .map_err(|e| Fatal::Runtime(format!("cannot listen on {}: {e}", args.admin)))?;
    let (grpc_addr, admin_addr) = (local(&listener, args.listen), local(&admin_listener, args.admin));
    let (trigger, shutdown) = shutdown_signal();
    tokio::spawn(admin::serve(admin_listener, readiness.clone(), metrics.clone(), shutdown.clone()));
    let controller = match (client, &args.routes) {
        (Some(client), _) => {
            let config = args.controller_config();
            let (r, m) = (readiness.clone(), metrics.clone());
            Some(tokio::spawn(controller::run(client, config, routes.clone(), r, m, shutdown.clone())))
        }
        (None, Some(path)) => {
            tokio::spawn(standalone::watch(path.clone(), routes.clone(), args.reload_interval));
            readiness.set_synced();
            None
        }
        (None, None) => unreachable!("a client exists unless a routes file was given"),
    };

    let mut server = Server::new(Forwarder::new(routes))
        .service("grpc.health.v1.Health", TowerHandler(health_service))
        .settings(args.server_settings())
        .connection_metrics(metrics.connections());
    if let Some(tls) = tls {
        tracing::info!(client_certificates = tls.verifies_clients(), "client TLS");
        tokio::spawn(tls.clone().watch(args.reload_interval));
        server = server.tls(tls);
    }
    let serving = tokio::spawn(server.serve(listener, shutdown));
    readiness.set_listening();
    // The bound addresses: with port 0 in the flags, this line says which ports were chosen.
    tracing::info!(listen = %grpc_addr, admin = %admin_addr, open_file_limit = nofile, "switchboard serving");

    wait_for_signal().await;
    tracing::info!(drain_timeout = ?args.drain_timeout, "draining");
    readiness.set_draining();
    tokio::time::sleep(args.shutdown_delay).await;
    trigger.trigger();
    match tokio::time::timeout(args.drain_timeout, serving).await {
        Ok(_) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!("drain timeout passed with calls still open; exiting"),
    }
    // The controller stopped at the trigger; the leader's lease release may still be under way.
    if let Some(controller) = controller {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), controller).await;
    }
    Ok(())
}

fn local(listener: &TcpListener, configured: std::net::SocketAddr) -> std::net::SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// Raises RLIMIT_NOFILE to its hard limit: every client and backend connection is a descriptor, and the
/// usual soft limit (1024) is far below `--max-client-connections`.
fn raise_nofile_limit(max_client_connections: u32) -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            if limit < u64::from(max_client_connections) * 2 {
                tracing::warn!(limit, max_client_connections, "open file limit is below two descriptors per allowed client connection (one for the client, one for backends)");
            }
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open file limit");
            None
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `switchboard crd`: the CRD as YAML.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&GrpcRoute::crd()).expect("the CRD serializes")
}

/// `switchboard explain`: where a call would go and why, as text or JSON.
pub async fn explain(args: &ExplainArgs) -> Result<String, Fatal> {
    let (table, reports) = match &args.routes {
        Some(path) => {
            let parsed = standalone::read_routes(path).map_err(|e| Fatal::Usage(e.to_string()))?;
            standalone::build_table(&parsed)
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| Fatal::Usage(format!("no --routes file and no Kubernetes configuration: {e}")))?;
            let snapshot = controller::snapshot(&client).await.map_err(|e| Fatal::Runtime(e.to_string()))?;
            let (table, outcomes) = controller::index::build(&snapshot);
            let reports = outcomes
                .into_iter()
                .map(|o| match o.report {
                    Ok(r) => r,
                    Err(e) => crate::table::RouteReport { id: o.id, accepted: Err(e), unresolved: vec![] },
                })
                .collect();
            (table, reports)
        }
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &args.headers {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| Fatal::Usage(format!("invalid header name {k:?}")))?;
        let value = http::HeaderValue::from_str(v).map_err(|_| Fatal::Usage(format!("invalid header value {v:?}")))?;
        headers.append(name, value);
    }
    let call = CallInfo { authority: &args.authority, path: &args.method, headers: &headers };
    let lines = table.explain(&call);
    let winner = lines.iter().find(|l| l.verdict == Verdict::Winner);
    let rows: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let backends: Vec<String> = l
                .rule
                .backends
                .targets()
                .map(|t| match t {
                    crate::table::Target::Backend(b) => b.name.to_string(),
                    crate::table::Target::Unresolved { name, .. } => format!("{name} (unresolved)"),
                })
                .collect();
            serde_json::json!({
                "route": l.rule.route.to_string(),
                "rule": l.rule.name.clone().unwrap_or_else(|| format!("#{}", l.rule.index)),
                "match": l.match_index,
                "hostname": format!("{:?}", l.host),
                "verdict": verdict_text(&l.verdict),
                "backends": backends,
            })
        })
        .collect();
    let rejected: Vec<serde_json::Value> = reports
        .iter()
        .filter_map(|r| r.accepted.as_ref().err().map(|e| serde_json::json!({"route": r.id.to_string(), "error": e})))
        .collect();
    if args.json {
        let out = serde_json::json!({
            "method": args.method, "authority": args.authority,
            "result": if winner.is_some() { "routed" } else { "UNIMPLEMENTED" },
            "candidates": rows, "rejectedRoutes": rejected,
        });
        return Ok(serde_json::to_string_pretty(&out).expect("json") + "\n");
    }
    let mut out = String::new();
    match winner {
        Some(w) => out.push_str(&format!(
            "{} -> {} (backends: {})\n",
            args.method,
            w.rule.describe(),
            rows_backends(&rows, lines.iter().position(|l| l.verdict == Verdict::Winner))
        )),
        None => out.push_str(&format!("{} -> UNIMPLEMENTED: no route matches\n", args.method)),
    }
    for row in &rows {
        out.push_str(&format!(
            "  {:<28} {:<12} match {:<5} {}\n",
            row["route"].as_str().unwrap_or(""),
            row["rule"].as_str().unwrap_or(""),
            row["match"].to_string(),
            row["verdict"].as_str().unwrap_or("")
        ));
    }
    for r in &rejected {
        out.push_str(&format!(
            "  rejected route {}: {}\n",
            r["route"].as_str().unwrap_or(""),
            r["error"].as_str().unwrap_or("")
        ));
    }
    Ok(out)
}

fn rows_backends(rows: &[serde_json::Value], i: Option<usize>) -> String {
    i.and_then(|i| rows[i]["backends"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Winner => "WINNER".into(),
        Verdict::Outranked => "matches, outranked by the winner".into(),
        Verdict::HostnameMismatch => "hostname does not match".into(),
        Verdict::MethodMismatch => "method does not match".into(),
        Verdict::HeaderMismatch(h) => format!("header {h} does not match"),
    }
}
