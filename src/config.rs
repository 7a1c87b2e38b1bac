//! Command-line flags and environment variables: the only place configuration is read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::proxy::{PoolSettings, ServerSettings};

/// switchboard: a Kubernetes-native gRPC router.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, propagate_version = true)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, forwarding calls by the routes in a file (standalone mode).
    Run(Box<RunArgs>),
    /// Print the GrpcRoute CustomResourceDefinition as YAML.
    Crd,
    /// Show where a call would go, and why, for the routes in a file.
    Explain(ExplainArgs),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags of `switchboard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Standalone mode: GrpcRoute YAML documents to serve, reloaded when the file changes. Without it,
    /// switchboard runs its controller against the cluster (in-cluster config or KUBECONFIG).
    #[arg(long, env = "SWITCHBOARD_ROUTES")]
    pub routes: Option<PathBuf>,
    /// Cluster mode: namespaces to watch (repeatable or comma-separated); all when absent.
    #[arg(long = "namespace", env = "SWITCHBOARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Cluster mode: only GrpcRoutes matching this label selector (e.g. `switchboard.dev/install=edge`).
    #[arg(long, env = "SWITCHBOARD_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Cluster mode: elect a leader (the only replica that writes status) with a Lease.
    #[arg(long, env = "SWITCHBOARD_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Cluster mode: name of the leader-election Lease.
    #[arg(long, env = "SWITCHBOARD_LEASE_NAME", default_value = "switchboard-leader")]
    pub lease_name: String,
    /// Cluster mode: namespace of the Lease (the pod's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Cluster mode: this replica's identity in the Lease (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of the gRPC listener.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz).
    #[arg(long, env = "SWITCHBOARD_ADMIN", default_value = "0.0.0.0:9090")]
    pub admin: SocketAddr,
    /// How often the routes file is checked for changes.
    #[arg(long, env = "SWITCHBOARD_RELOAD_INTERVAL", default_value = "1s", value_parser = duration)]
    pub reload_interval: Duration,
    /// After SIGTERM, how long to keep accepting calls with readiness already false, so load balancers and
    /// Endpoints stop sending new ones before the GOAWAY.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// How long calls in flight may take to finish after SIGTERM.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Most concurrent streams per client connection.
    #[arg(long, env = "SWITCHBOARD_MAX_CONCURRENT_STREAMS", default_value_t = 2048)]
    pub max_concurrent_streams: u32,
    /// HTTP/2 stream window, in bytes, on client and backend connections: the most buffered per stream and
    /// direction.
    #[arg(long, env = "SWITCHBOARD_STREAM_WINDOW", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647))]
    pub stream_window: u32,
    /// HTTP/2 connection window, in bytes, on client and backend connections.
    #[arg(long, env = "SWITCHBOARD_CONNECTION_WINDOW", default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647))]
    pub connection_window: u32,
    /// Limit on connecting to a backend (TCP and HTTP/2 handshake).
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Interval of keep-alive PINGs to backends.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = duration)]
    pub keepalive_interval: Duration,
    /// A backend connection whose PING is not answered within this is closed.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub keepalive_timeout: Duration,
    /// Backend connections without calls for this long are closed.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Longest wait between reconnect attempts to a failing backend.
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MAX", default_value = "5s", value_parser = duration)]
    pub backoff_max: Duration,
    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long, env = "SWITCHBOARD_WORKERS")]
    pub workers: Option<usize>,
    /// Log filter, `RUST_LOG` syntax (e.g. `info,switchboard=debug`).
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// Settings for the controller (cluster mode).
    pub fn controller_config(&self) -> crate::controller::ControllerConfig {
        let identity = self.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "switchboard".into())
        });
        crate::controller::ControllerConfig {
            namespaces: self.namespaces.clone(),
            label_selector: self.label_selector.clone(),
            lease: self.leader_election.then(|| crate::controller::leader::LeaseConfig {
                namespace: self.lease_namespace.clone(),
                name: self.lease_name.clone(),
                identity,
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            }),
            ..Default::default()
        }
    }

    /// Settings for client connections.
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            max_concurrent_streams: self.max_concurrent_streams,
            stream_window: self.stream_window,
            connection_window: self.connection_window,
            ..ServerSettings::default()
        }
    }

    /// Settings for backend connections.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.connect_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            idle_timeout: self.idle_timeout,
            backoff_max: self.backoff_max,
            stream_window: self.stream_window,
            connection_window: self.connection_window,
            ..PoolSettings::default()
        }
    }
}

/// Flags of `switchboard explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// GrpcRoute YAML documents; without it, the routes, Services and EndpointSlices of the cluster
    /// (in-cluster config or KUBECONFIG).
    #[arg(long, env = "SWITCHBOARD_ROUTES")]
    pub routes: Option<PathBuf>,
    /// The call's path, `/package.Service/Method`.
    #[arg(long)]
    pub method: String,
    /// The call's `:authority`.
    #[arg(long, default_value = "")]
    pub authority: String,
    /// Request headers, `name=value` (repeatable).
    #[arg(long = "header", value_parser = header_pair)]
    pub headers: Vec<(String, String)>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::table::parse_duration(s)
}

fn header_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}
