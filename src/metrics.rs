//! Prometheus metrics. Each component's series are registered here once; label values come only from the
//! route table or closed sets, so cardinality is bounded whatever clients send. The hot path uses metric
//! handles resolved when a table is bound, never a label lookup.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label value for methods and services the route table does not name.
pub const UNKNOWN: &str = "unknown";

/// Label value for the methods of a service beyond its cap of learned methods (`--max-methods-per-service`).
pub const OTHER: &str = "other";

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Why switchboard answered a call itself.
pub const LOCAL_REASONS: [&str; 10] = [
    "no_route",
    "permission_denied",
    "no_endpoints",
    "connect_failed",
    "upstream_failed",
    "upstream_not_grpc",
    "timeout",
    "bad_request",
    "shutting_down",
    "handler",
];

/// All of switchboard's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
    route_requests: IntCounterVec,
    route_responses: IntCounterVec,
    backend_latency: HistogramVec,
    local: IntCounterVec,
    retries: IntCounterVec,
    /// Failed connection attempts to backends.
    pub connect_failures: IntCounterVec,
    /// Streams open to backends (calls and mirrors).
    pub upstream_streams: IntGauge,
    /// Backend connections retired after a GOAWAY, by its error code.
    pub upstream_goaways: IntCounterVec,
    /// Endpoints ejected as outliers.
    pub outlier_ejections: IntCounter,
    /// Endpoints ejected now.
    pub outlier_ejected: IntGauge,
    /// Client connections closed by switchboard, by reason.
    pub downstream_closed: IntCounterVec,
    /// TLS handshakes with clients, by result.
    pub downstream_tls_handshakes: IntCounterVec,
    /// Tasks alive in the runtime (read when scraped).
    pub runtime_tasks: IntGauge,
    /// Open client (downstream) connections.
    pub downstream_connections: IntGauge,
    /// Open backend (upstream) connections.
    pub upstream_connections: IntGauge,
    /// Calls in flight.
    pub active_streams: IntGauge,
    /// Rules in the current route table.
    pub table_rules: IntGauge,
    /// Unix time of the last table swap.
    pub table_updated: IntGauge,
    /// Controller: watch events by resource kind.
    pub watch_events: IntCounterVec,
    /// Controller: watch errors by resource kind.
    pub watch_errors: IntCounterVec,
    /// Controller: table rebuilds.
    pub reconciles: IntCounter,
    /// Controller: rebuild duration.
    pub reconcile_seconds: Histogram,
    /// Controller: status writes by result.
    pub status_writes: IntCounterVec,
    /// Controller: routes by state (accepted, rejected).
    pub routes: IntGaugeVec,
    /// Controller: 1 when this replica is the leader.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels).expect("valid");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let m = ["grpc_service", "grpc_method"];
        let mc = ["grpc_service", "grpc_method", "grpc_code"];
        let build = IntGaugeVec::new(
            Opts::new("switchboard_build_info", "Build information; the value is always 1."),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone())).expect("registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let reconcile_seconds = Histogram::with_opts(
            HistogramOpts::new("switchboard_controller_reconcile_duration_seconds", "Time to rebuild the route table.")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid");
        r.register(Box::new(reconcile_seconds.clone())).expect("registered once");
        let routes = IntGaugeVec::new(Opts::new("switchboard_controller_routes", "GrpcRoutes by state."), &["state"])
            .expect("valid");
        r.register(Box::new(routes.clone())).expect("registered once");
        Self {
            started: counter(&r, "grpc_server_started_total", "Calls started on the server.", &m),
            handled: counter(&r, "grpc_server_handled_total", "Calls completed, by gRPC code.", &mc),
            handling: histogram(&r, "grpc_server_handling_seconds", "Time from call start to its end.", &m),
            msg_received: counter(&r, "grpc_server_msg_received_total", "Messages received from clients.", &m),
            msg_sent: counter(&r, "grpc_server_msg_sent_total", "Messages sent to clients.", &m),
            route_requests: counter(
                &r,
                "switchboard_route_requests_total",
                "Calls sent toward a route's backend.",
                &["route", "backend"],
            ),
            route_responses: counter(
                &r,
                "switchboard_route_responses_total",
                "Calls of a route's backend completed, by gRPC code.",
                &["route", "backend", "grpc_code"],
            ),
            backend_latency: histogram(
                &r,
                "switchboard_backend_response_seconds",
                "Time from sending a call to the backend until its response headers.",
                &["route", "backend"],
            ),
            local: counter(
                &r,
                "switchboard_local_responses_total",
                "Calls answered by switchboard itself.",
                &["reason"],
            ),
            retries: counter(
                &r,
                "switchboard_retries_total",
                "Calls sent again: unsent (nothing reached a backend), unprocessed (the backend refused the \
                 stream or it was above its GOAWAY's last stream id), policy (the rule's retry policy).",
                &["reason"],
            ),
            connect_failures: counter(
                &r,
                "switchboard_upstream_connect_failures_total",
                "Failed attempts to connect to a backend.",
                &["backend"],
            ),
            upstream_streams: gauge(&r, "switchboard_upstream_streams", "Streams open to backends (calls, mirrors)."),
            upstream_goaways: counter(
                &r,
                "switchboard_upstream_goaways_total",
                "Backend connections retired after the backend sent GOAWAY, by its HTTP/2 error code.",
                &["code"],
            ),
            outlier_ejections: {
                let c = IntCounter::new("switchboard_outlier_ejections_total", "Endpoints ejected as outliers.")
                    .expect("valid");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            outlier_ejected: gauge(&r, "switchboard_outlier_ejected_endpoints", "Endpoints ejected now."),
            downstream_closed: counter(
                &r,
                "switchboard_downstream_connections_closed_total",
                "Client connections switchboard closed, by reason: handshake_timeout, idle, keepalive_timeout, \
                 max_connections, premature_resets, tls_handshake_failed.",
                &["reason"],
            ),
            downstream_tls_handshakes: counter(
                &r,
                "switchboard_downstream_tls_handshakes_total",
                "TLS handshakes with clients, by result: ok, failed, timeout.",
                &["result"],
            ),
            runtime_tasks: gauge(&r, "switchboard_runtime_tasks", "Tasks alive in the runtime."),
            downstream_connections: gauge(&r, "switchboard_downstream_connections", "Open client connections."),
            upstream_connections: gauge(&r, "switchboard_upstream_connections", "Open backend connections."),
            active_streams: gauge(&r, "switchboard_active_streams", "Calls in flight."),
            table_rules: gauge(&r, "switchboard_route_table_rules", "Rules in the current route table."),
            table_updated: gauge(
                &r,
                "switchboard_route_table_last_update_timestamp_seconds",
                "When the table was last swapped.",
            ),
            watch_events: counter(&r, "switchboard_controller_watch_events_total", "Watch events received.", &["kind"]),
            watch_errors: counter(
                &r,
                "switchboard_controller_watch_errors_total",
                "Watch errors (retried).",
                &["kind"],
            ),
            reconciles: {
                let c =
                    IntCounter::new("switchboard_controller_reconciles_total", "Route table rebuilds.").expect("valid");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            reconcile_seconds,
            status_writes: counter(
                &r,
                "switchboard_controller_status_writes_total",
                "GrpcRoute and BackendTLSPolicy status writes, by result.",
                &["result"],
            ),
            routes,
            leader: gauge(&r, "switchboard_controller_leader", "1 when this replica is the leader."),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }

    /// Handles for one `grpc_service`/`grpc_method` pair.
    pub fn method(&self, service: &str, method: &str) -> Arc<MethodMetrics> {
        let l = [service, method];
        Arc::new(MethodMetrics {
            started: self.started.with_label_values(&l),
            handled: std::array::from_fn(|code| self.handled.with_label_values(&[service, method, CODES[code]])),
            handling: self.handling.with_label_values(&l),
            msg_received: self.msg_received.with_label_values(&l),
            msg_sent: self.msg_sent.with_label_values(&l),
        })
    }

    /// Handles for one route/backend pair.
    pub fn backend(&self, route: &str, backend: &str) -> Arc<BackendMetrics> {
        Arc::new(BackendMetrics {
            requests: self.route_requests.with_label_values(&[route, backend]),
            responses: LazyCodes {
                vec: self.route_responses.clone(),
                labels: [route.to_string(), backend.to_string()],
                codes: Default::default(),
            },
            latency: self.backend_latency.with_label_values(&[route, backend]),
        })
    }

    /// Counts a call sent again.
    pub fn retried(&self, why: Retried) {
        let label = match why {
            Retried::Unsent => "unsent",
            Retried::Unprocessed => "unprocessed",
            Retried::Policy => "policy",
        };
        self.retries.with_label_values(&[label]).inc();
    }

    /// Calls sent again because nothing had reached a backend.
    pub fn retries_unsent(&self) -> u64 {
        self.retries.with_label_values(&["unsent"]).get()
    }

    /// The handles the gRPC server counts its client connections into.
    pub fn connections(&self) -> crate::proxy::ConnectionMetrics {
        crate::proxy::ConnectionMetrics {
            open: self.downstream_connections.clone(),
            closed: self.downstream_closed.clone(),
            tls_handshakes: self.downstream_tls_handshakes.clone(),
        }
    }

    /// The handles backend connection pools count into.
    pub fn pool(&self) -> crate::proxy::PoolMetrics {
        crate::proxy::PoolMetrics {
            connections: self.upstream_connections.clone(),
            connect_failures: self.connect_failures.clone(),
            streams: self.upstream_streams.clone(),
            goaways: self.upstream_goaways.clone(),
            ejections: self.outlier_ejections.clone(),
            ejected: self.outlier_ejected.clone(),
        }
    }

    /// Counts a call switchboard answered itself.
    pub fn local_response(&self, reason: &str) {
        self.local.with_label_values(&[reason]).inc();
    }
}

/// Why a call was sent again.
#[derive(Clone, Copy, Debug)]
pub enum Retried {
    /// Nothing reached a backend.
    Unsent,
    /// The backend did not process the stream.
    Unprocessed,
    /// The rule's retry policy.
    Policy,
}

/// gRPC code names, as label values, by number.
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Per-method handles (the standard `grpc_server_*` names).
#[derive(Debug)]
pub struct MethodMetrics {
    started: IntCounter,
    handled: [IntCounter; 17],
    handling: Histogram,
    msg_received: IntCounter,
    msg_sent: IntCounter,
}

impl MethodMetrics {
    /// A call started.
    pub fn start(&self) {
        self.started.inc();
    }

    /// A call ended with `code` after `elapsed`, having relayed these messages.
    pub fn finish(&self, code: u8, elapsed: Duration, received: u64, sent: u64) {
        self.handled[usize::from(code.min(16))].inc();
        self.handling.observe(elapsed.as_secs_f64());
        self.msg_received.inc_by(received);
        self.msg_sent.inc_by(sent);
    }
}

/// Per route/backend handles.
#[derive(Debug)]
pub struct BackendMetrics {
    requests: IntCounter,
    responses: LazyCodes,
    latency: Histogram,
}

/// One counter per gRPC code, each registered the first time its code is seen: with thousands of
/// route/backend pairs, seventeen series each (mostly zeros) were most of the process's memory and of every
/// scrape. After the first call with a code, counting takes no lock.
#[derive(Debug)]
struct LazyCodes {
    vec: IntCounterVec,
    labels: [String; 2],
    codes: [std::sync::OnceLock<IntCounter>; 17],
}

impl LazyCodes {
    fn inc(&self, code: u8) {
        let i = usize::from(code.min(16));
        let [route, backend] = &self.labels;
        self.codes[i].get_or_init(|| self.vec.with_label_values(&[route, backend, CODES[i]])).inc();
    }
}

impl BackendMetrics {
    /// A call was sent toward this backend.
    pub fn request(&self) {
        self.requests.inc();
    }

    /// Response headers arrived after `latency`.
    pub fn response_started(&self, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
    }

    /// The backend's call ended with `code`.
    pub fn response(&self, code: u8) {
        self.responses.inc(code);
    }
}
