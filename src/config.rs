//! Command-line flags and environment variables: the only place configuration is read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::proxy::{OutlierSettings, PoolSettings, ServerSettings};

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
    /// Client TLS: PEM certificate chain (leaf first) served to clients, reloaded when it changes. Without it,
    /// clients speak cleartext HTTP/2 (h2c).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client TLS: PEM private key of `--tls-cert`, reloaded with it.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Client TLS: PEM CA bundle; every client must present a certificate that chains to it (mTLS), and rules
    /// may admit only some client identities (`clientIdentities`). Reloaded when it changes.
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Cluster mode: PEM certificate chain presented to backends that a BackendTLSPolicy has switchboard reach
    /// over TLS, when they ask for one (as the Gateway API's `Gateway.spec.backendTLS.clientCertificateRef`).
    /// Reloaded when it changes. Standalone, `BackendTLS` documents name their own.
    #[arg(
        long,
        env = "SWITCHBOARD_BACKEND_TLS_CLIENT_CERT",
        requires = "backend_tls_client_key",
        conflicts_with = "routes"
    )]
    pub backend_tls_client_cert: Option<PathBuf>,
    /// Cluster mode: PEM private key of `--backend-tls-client-cert`, reloaded with it.
    #[arg(long, env = "SWITCHBOARD_BACKEND_TLS_CLIENT_KEY", requires = "backend_tls_client_cert")]
    pub backend_tls_client_key: Option<PathBuf>,
    /// How often the routes file and the TLS files are checked for changes.
    #[arg(long, env = "SWITCHBOARD_RELOAD_INTERVAL", default_value = "1s", value_parser = positive)]
    pub reload_interval: Duration,
    /// After SIGTERM, how long to keep accepting calls with readiness already false, so load balancers and
    /// Endpoints stop sending new ones before the GOAWAY.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// How long calls in flight may take to finish after SIGTERM.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = positive)]
    pub drain_timeout: Duration,
    /// Most concurrent calls per client connection (SETTINGS_MAX_CONCURRENT_STREAMS); a call holds its slot
    /// until its handler has finished.
    #[arg(long, env = "SWITCHBOARD_MAX_CONCURRENT_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// HTTP/2 stream window, in bytes, on client and backend connections: the most buffered per stream and
    /// direction. Connection windows are a stream window per stream the connection may carry, so stalled
    /// streams never block the others.
    #[arg(long, env = "SWITCHBOARD_STREAM_WINDOW", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647))]
    pub stream_window: u32,
    /// Largest header list (request or response metadata), in bytes, accepted from clients and backends.
    #[arg(long, env = "SWITCHBOARD_MAX_HEADER_LIST_SIZE", default_value_t = 16 << 10, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_header_list_size: u32,
    /// TCP keep-alive idle time on client and backend sockets, then three probes a third of it apart; `off`
    /// disables. Finds peers that vanished without the HTTP/2 PINGs that servers ration.
    #[arg(long, env = "SWITCHBOARD_TCP_KEEPALIVE", default_value = "30s", value_parser = optional)]
    pub tcp_keepalive: Toggle,
    /// A client must send the HTTP/2 preface within this time of connecting.
    #[arg(long, env = "SWITCHBOARD_CLIENT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = positive)]
    pub client_handshake_timeout: Duration,
    /// Client connections without calls for this long are closed with GOAWAY.
    #[arg(long, env = "SWITCHBOARD_CLIENT_IDLE_TIMEOUT", default_value = "1h", value_parser = positive)]
    pub client_idle_timeout: Duration,
    /// Interval of HTTP/2 PINGs to clients (clients accept them at any rate); `off` sends none.
    #[arg(long, env = "SWITCHBOARD_CLIENT_KEEPALIVE_INTERVAL", default_value = "1m", value_parser = optional)]
    pub client_keepalive_interval: Toggle,
    /// A client connection whose PING is not answered within this is closed.
    #[arg(long, env = "SWITCHBOARD_CLIENT_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = positive)]
    pub client_keepalive_timeout: Duration,
    /// Most client connections at once; more are closed as soon as they are accepted.
    #[arg(long, env = "SWITCHBOARD_MAX_CLIENT_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_client_connections: u32,
    /// A client connection on which more calls than this were cancelled by the client within a second of
    /// starting (and at least half of its calls) is closed with GOAWAY(ENHANCE_YOUR_CALM): rapid reset.
    #[arg(long, env = "SWITCHBOARD_MAX_PREMATURE_RESETS", default_value_t = 100)]
    pub max_premature_resets: u32,
    /// Limit on connecting to a backend: TCP, the HTTP/2 handshake and the backend's answer to a first PING.
    /// A call whose connect fails tries another endpoint.
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT", default_value = "2s", value_parser = positive)]
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 PINGs on backend connections with calls open; `off` (the default) sends none:
    /// gRPC servers allow one per 5 minutes by default and answer more with GOAWAY(too_many_pings).
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_INTERVAL", default_value = "off", value_parser = optional)]
    pub keepalive_interval: Toggle,
    /// A backend connection whose PING is not answered within this is closed.
    #[arg(long, env = "SWITCHBOARD_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = positive)]
    pub keepalive_timeout: Duration,
    /// Backend connections without calls for this long are closed.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "5m", value_parser = positive)]
    pub idle_timeout: Duration,
    /// Longest wait between reconnect attempts to a failing backend.
    #[arg(long, env = "SWITCHBOARD_BACKOFF_MAX", default_value = "5s", value_parser = positive)]
    pub backoff_max: Duration,
    /// Most calls on one backend connection (fewer if the backend says so); more open more connections.
    #[arg(long, env = "SWITCHBOARD_MAX_STREAMS_PER_CONNECTION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Consecutive gateway failures (connect failures, lost connections, HTTP 502/503/504) that eject an
    /// endpoint from its backend for a while; 0 turns ejection off.
    #[arg(long, env = "SWITCHBOARD_OUTLIER_CONSECUTIVE_FAILURES", default_value_t = 5)]
    pub outlier_consecutive_failures: u32,
    /// How long a first ejection lasts; each further one of the same endpoint doubles it.
    #[arg(long, env = "SWITCHBOARD_OUTLIER_BASE_EJECTION_TIME", default_value = "30s", value_parser = positive)]
    pub outlier_base_ejection_time: Duration,
    /// The longest ejection.
    #[arg(long, env = "SWITCHBOARD_OUTLIER_MAX_EJECTION_TIME", default_value = "5m", value_parser = positive)]
    pub outlier_max_ejection_time: Duration,
    /// Most endpoints of a backend ejected at once, in percent (one may always be).
    #[arg(long, env = "SWITCHBOARD_OUTLIER_MAX_EJECTION_PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub outlier_max_ejection_percent: u32,
    /// Methods per service that get their own `grpc_method` label when a rule routes the whole service: a
    /// method is labelled once a backend answered it with anything but UNIMPLEMENTED; beyond this many,
    /// `other`. 0 labels every such call `unknown`.
    #[arg(long, env = "SWITCHBOARD_MAX_METHODS_PER_SERVICE", default_value_t = 100)]
    pub max_methods_per_service: u32,
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
            lease: self.leader_election.then(|| {
                crate::controller::leader::LeaseConfig::new(&self.lease_namespace, &self.lease_name, identity)
            }),
            backend_client_cert: self.backend_tls_client_cert.clone().zip(self.backend_tls_client_key.clone()),
            file_recheck: self.reload_interval,
            ..Default::default()
        }
    }

    /// The client TLS files, when client TLS is on.
    pub fn server_tls_files(&self) -> Option<crate::tls::ServerTlsFiles> {
        Some(crate::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Settings for client connections.
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            max_concurrent_streams: self.max_concurrent_streams,
            stream_window: self.stream_window,
            max_header_list_size: self.max_header_list_size,
            handshake_timeout: self.client_handshake_timeout,
            idle_timeout: self.client_idle_timeout,
            keepalive_interval: self.client_keepalive_interval.0,
            keepalive_timeout: self.client_keepalive_timeout,
            tcp_keepalive: self.tcp_keepalive.0,
            max_connections: self.max_client_connections as usize,
            max_premature_resets: self.max_premature_resets,
        }
    }

    /// Settings for backend connections.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.connect_timeout,
            keepalive_interval: self.keepalive_interval.0,
            keepalive_timeout: self.keepalive_timeout,
            tcp_keepalive: self.tcp_keepalive.0,
            idle_timeout: self.idle_timeout,
            backoff_max: self.backoff_max,
            stream_window: self.stream_window,
            max_streams_per_connection: self.max_streams_per_connection,
            max_header_list_size: self.max_header_list_size,
            outlier: OutlierSettings {
                consecutive_failures: self.outlier_consecutive_failures,
                base_ejection_time: self.outlier_base_ejection_time,
                max_ejection_time: self.outlier_max_ejection_time,
                max_ejection_percent: self.outlier_max_ejection_percent,
            },
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

/// A duration that may be `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toggle(pub Option<Duration>);

fn duration(s: &str) -> Result<Duration, String> {
    crate::table::parse_duration(s)
}

/// A duration above zero: a zero timeout or interval would fire at once, or never let a call through.
fn positive(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => Err(format!("{s:?} must be greater than zero")),
        d => Ok(d),
    }
}

fn optional(s: &str) -> Result<Toggle, String> {
    match s {
        "off" => Ok(Toggle(None)),
        _ => positive(s).map(|d| Toggle(Some(d))).map_err(|e| format!("{e} (or `off`)")),
    }
}

fn header_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["switchboard", "run"].iter().chain(extra).copied();
        Args::try_parse_from(argv).map(|a| match a.command {
            Command::Run(r) => *r,
            _ => unreachable!(),
        })
    }

    #[test]
    fn defaults_and_toggles() {
        let a = run_args(&[]).unwrap();
        assert_eq!(a.pool_settings().keepalive_interval, None, "no PINGs to backends by default");
        assert_eq!(a.server_settings().keepalive_interval, Some(Duration::from_secs(60)));
        let a = run_args(&["--keepalive-interval", "5m", "--client-keepalive-interval", "off"]).unwrap();
        assert_eq!(a.pool_settings().keepalive_interval, Some(Duration::from_secs(300)));
        assert_eq!(a.server_settings().keepalive_interval, None);
    }

    #[test]
    fn zero_durations_are_refused() {
        for flag in
            ["--connect-timeout", "--reload-interval", "--idle-timeout", "--keepalive-interval", "--drain-timeout"]
        {
            let e = run_args(&[flag, "0s"]).unwrap_err().to_string();
            assert!(e.contains("must be greater than zero"), "{flag}: {e}");
        }
        assert_eq!(run_args(&["--shutdown-delay", "0s"]).unwrap().shutdown_delay, Duration::ZERO, "no delay is fine");
    }

    #[test]
    fn backend_client_certificates_are_for_cluster_mode() {
        let pair = ["--backend-tls-client-cert", "c.pem", "--backend-tls-client-key", "k.pem"];
        let config = run_args(&pair).unwrap().controller_config();
        assert_eq!(config.backend_client_cert, Some(("c.pem".into(), "k.pem".into())));
        assert!(run_args(&pair[..2]).is_err(), "the key goes with it");
        let e = run_args(&[&pair[..], &["--routes", "r.yaml"]].concat()).unwrap_err().to_string();
        assert!(e.contains("cannot be used with"), "standalone names its own in BackendTLS documents: {e}");
    }

    #[test]
    fn tls_files_come_together() {
        assert_eq!(run_args(&[]).unwrap().server_tls_files(), None);
        for alone in [&["--tls-cert", "c.pem"][..], &["--tls-key", "k.pem"], &["--tls-client-ca", "ca.pem"]] {
            assert!(run_args(alone).is_err(), "{alone:?} needs the others");
        }
        let files = run_args(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap().server_tls_files().unwrap();
        assert_eq!((files.cert.to_str(), files.client_ca), (Some("c.pem"), None));
    }
}
