//! The admin listener (`/healthz`, `/readyz`, `/metrics`) and the readiness state shared with gRPC health.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

use crate::metrics::Metrics;
use crate::proxy::Shutdown;

/// Whether this replica should get traffic: listener up, first route sync done, not draining.
#[derive(Debug)]
pub struct Readiness {
    listening: AtomicBool,
    synced: AtomicBool,
    draining: AtomicBool,
    health: HealthReporter,
}

impl Readiness {
    /// Not ready; `health` is the gRPC health service to keep in step.
    pub fn new(health: HealthReporter) -> Arc<Self> {
        Arc::new(Self {
            listening: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            health,
        })
    }

    /// The gRPC listener is bound.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
        self.publish();
    }

    /// The first full route sync is done.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.publish();
    }

    /// Shutdown began.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.publish();
    }

    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.synced.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }

    fn publish(&self) {
        let health = self.health.clone();
        let ready = self.is_ready();
        tokio::spawn(async move {
            let status =
                if ready { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            health.set_service_status("", status).await;
        });
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, metrics: Metrics, mut shutdown: Shutdown) {
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let (readiness, metrics) = (readiness.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, readiness.clone(), metrics.clone()));
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" | "/livez" => (StatusCode::OK, Bytes::from_static(b"ok\n")),
        "/readyz" if readiness.is_ready() => (StatusCode::OK, Bytes::from_static(b"ready\n")),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"not ready\n")),
        "/metrics" => (StatusCode::OK, Bytes::from(metrics.render())),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    if req.uri().path() == "/metrics" {
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    }
    Ok(res)
}
