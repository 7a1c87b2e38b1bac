//! Shared test parts: a real tonic echo backend, the proxy on loopback, clients, and `eventually`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use switchboard::crd::BackendObjectRef;
use switchboard::proxy::{shutdown_signal, Forwarder, Pools, Routes, Server, ShutdownTrigger, TowerHandler};
use switchboard::standalone;
use switchboard::table::{self, EndpointAddr, Resolve, RouteId, Unresolved};

pub mod apiserver;
pub mod frames;
pub mod k8s;
pub mod peers;
pub mod process;
pub mod raw;
pub mod tls;

pub mod pb {
    tonic::include_proto!("switchboard.echo.v1");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

/// What a backend saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    /// Calls whose handler was dropped before it finished (the client or proxy cancelled them).
    pub cancelled: AtomicUsize,
    /// Requests received on client-streaming and bidi calls.
    pub messages: AtomicUsize,
    pub last_metadata: std::sync::Mutex<Option<MetadataMap>>,
}

#[derive(Clone)]
pub struct EchoBackend {
    pub name: String,
    pub seen: Arc<Seen>,
}

/// Marks a call cancelled when dropped before `done()`.
struct CancelGuard(Arc<Seen>, bool);
impl CancelGuard {
    fn done(mut self) {
        self.1 = true;
    }
}
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl EchoBackend {
    fn reply(&self, payload: Vec<u8>, received: u32) -> EchoReply {
        EchoReply { payload, backend: self.name.clone(), received }
    }

    /// Applies the test controls carried in metadata: `x-fail: CODE`, `x-sleep-ms: N`.
    async fn controls(&self, md: &MetadataMap) -> Result<(), Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        *self.seen.last_metadata.lock().unwrap() = Some(md.clone());
        if let Some(ms) = md.get("x-sleep-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(code) = md.get("x-fail").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()) {
            let mut status = Status::new(code.into(), format!("failed by {} as asked", self.name));
            status.metadata_mut().insert("x-backend", self.name.parse().unwrap());
            status.metadata_mut().insert_bin("x-detail-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
            return Err(status);
        }
        Ok(())
    }

    /// Response metadata: the backend's name, and every `x-echo-*` request header echoed back.
    fn respond<T>(&self, md: &MetadataMap, msg: T) -> Response<T> {
        let mut res = Response::new(msg);
        res.metadata_mut().insert("x-backend", self.name.parse().unwrap());
        for kv in md.iter() {
            match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-echo-") => {
                    res.metadata_mut().insert(k.clone(), v.clone());
                }
                tonic::metadata::KeyAndValueRef::Binary(k, v) if k.as_str().starts_with("x-echo-") => {
                    res.metadata_mut().insert_bin(k.clone(), v.clone());
                }
                _ => {}
            }
        }
        res
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoBackend {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let guard = CancelGuard(self.seen.clone(), false);
        self.controls(req.metadata()).await?;
        let md = req.metadata().clone();
        let reply = self.reply(req.into_inner().payload, 1);
        guard.done();
        Ok(self.respond(&md, reply))
    }

    type ServerStreamStream = ReplyStream;
    async fn server_stream(&self, req: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        self.controls(req.metadata()).await?;
        let md = req.metadata().clone();
        let msg = req.into_inner();
        let (name, seen) = (self.name.clone(), self.seen.clone());
        let stream = async_stream(move |tx| async move {
            let guard = CancelGuard(seen, false);
            for i in 0..msg.count {
                let reply = EchoReply { payload: msg.payload.clone(), backend: name.clone(), received: i };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            guard.done();
        });
        Ok(self.respond(&md, stream))
    }

    async fn client_stream(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        let guard = CancelGuard(self.seen.clone(), false);
        self.controls(req.metadata()).await?;
        let md = req.metadata().clone();
        let mut stream = req.into_inner();
        let (mut n, mut last, mut bytes) = (0u32, Vec::new(), 0usize);
        while let Some(m) = stream.next().await {
            let m = m?;
            n += 1;
            bytes += m.payload.len();
            self.seen.messages.fetch_add(1, Ordering::SeqCst);
            last = m.payload;
        }
        guard.done();
        let mut reply = self.reply(last, n);
        reply.payload.truncate(64);
        reply.backend = format!("{}:{bytes}", self.name);
        Ok(self.respond(&md, reply))
    }

    type BidiStreamStream = ReplyStream;
    async fn bidi_stream(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
        self.controls(req.metadata()).await?;
        let md = req.metadata().clone();
        let mut input = req.into_inner();
        let (name, seen) = (self.name.clone(), self.seen.clone());
        let stream = async_stream(move |tx| async move {
            let guard = CancelGuard(seen.clone(), false);
            let mut i = 0;
            while let Some(m) = input.next().await {
                let Ok(m) = m else { return };
                seen.messages.fetch_add(1, Ordering::SeqCst);
                let reply = EchoReply { payload: m.payload, backend: name.clone(), received: i };
                i += 1;
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            guard.done();
        });
        Ok(self.respond(&md, stream))
    }
}

/// A stream fed by a task, with a one-message buffer so a slow reader slows the producer.
fn async_stream<F, Fut>(f: F) -> ReplyStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Stops the backend and waits until its listener is closed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts a tonic echo backend on a loopback port.
pub async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    backend_on(name, listener).await
}

pub async fn backend_on(name: &str, listener: TcpListener) -> Backend {
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let svc = EchoServer::new(EchoBackend { name: name.into(), seen: seen.clone() })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // A stream limit below what the concurrency test opens, so the proxy needs several connections.
        tonic::transport::Server::builder()
            .max_concurrent_streams(250)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Backend { addr, seen, stop: Some(stop), task }
}

/// Accepted connections without Nagle's delay: gRPC writes HEADERS and DATA separately, and a delayed ACK
/// would hold the second for 40 ms.
fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

/// A routes file with one route per (service, backends) pair.
pub fn routes_yaml(rules: &[(&str, &[(SocketAddr, u32)])]) -> String {
    routes_yaml_with(rules, "")
}

/// Like [`routes_yaml`], with `extra` (indented YAML, e.g. `      timeout: 1s\n`) added to every rule.
pub fn routes_yaml_with(rules: &[(&str, &[(SocketAddr, u32)])], extra: &str) -> String {
    let mut out = String::new();
    for (i, (service, backends)) in rules.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: r{i}}}\nspec:\n  rules:\n    - matches: [{{method: {{service: {service}}}}}]\n      backendRefs:\n"
        ));
        for (addr, weight) in backends.iter() {
            out.push_str(&format!("        - {{name: \"{}\", port: {}, weight: {weight}}}\n", addr.ip(), addr.port()));
        }
        out.push_str(extra);
    }
    out
}

pub const ECHO: &str = "switchboard.echo.v1.Echo";

/// The proxy, in process, on a loopback port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub routes: Arc<Routes>,
    shutdown: ShutdownTrigger,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    /// Replaces the route table with the routes in `yaml`.
    pub fn set_routes(&self, yaml: &str) {
        let parsed = standalone::parse_routes(std::path::Path::new("test.yaml"), yaml).unwrap();
        let (_, reports) = standalone::apply(&parsed, &self.routes);
        assert!(reports.iter().all(|r| r.accepted.is_ok()), "{reports:?}");
    }

    /// Serves `service` from one backend whose endpoints are `endpoints` (see [`set_backend`]).
    pub fn set_backend(&self, service: &str, endpoints: &[SocketAddr], extra: &str) {
        set_backend(&self.routes, service, endpoints, extra);
    }

    /// Starts draining: GOAWAY to clients, open streams finish.
    pub fn drain(&self) {
        self.shutdown.trigger();
    }
}

/// Serves `service` from one backend whose endpoints are `endpoints`, as a Service with several pods
/// (standalone backendRefs have one endpoint each). `extra` is added to the rule, as in [`routes_yaml_with`].
pub fn set_backend(routes: &Routes, service: &str, endpoints: &[SocketAddr], extra: &str) {
    struct Fixed(Vec<SocketAddr>);
    impl Resolve<EndpointAddr> for Fixed {
        fn resolve(&self, _: &RouteId, r: &BackendObjectRef) -> Result<table::Backend<EndpointAddr>, Unresolved> {
            let endpoints = self.0.iter().map(|a| EndpointAddr::Socket(*a)).collect();
            Ok(table::Backend { name: r.name.as_str().into(), endpoints })
        }
    }
    let one: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let yaml = routes_yaml_with(&[(service, &[(one, 1)])], extra);
    let parsed = standalone::parse_routes(std::path::Path::new("test.yaml"), &yaml).unwrap();
    let id = RouteId { namespace: "default".into(), name: "r0".into() };
    let out = table::build(&[table::RouteInput { id: &id, spec: &parsed[0].spec }], &Fixed(endpoints.to_vec()));
    assert!(out.reports.iter().all(|r| r.accepted.is_ok()), "{:?}", out.reports);
    routes.swap(out.table);
}

pub async fn proxy(yaml: &str) -> Proxy {
    proxy_with(yaml, Default::default()).await
}

pub async fn proxy_with(yaml: &str, pool: switchboard::proxy::PoolSettings) -> Proxy {
    proxy_full(yaml, pool, Default::default()).await
}

/// The proxy with these backend pool and client connection settings; its metrics are `routes.metrics()`.
pub async fn proxy_full(
    yaml: &str,
    pool: switchboard::proxy::PoolSettings,
    settings: switchboard::proxy::ServerSettings,
) -> Proxy {
    let metrics = switchboard::metrics::Metrics::new();
    let routes = Arc::new(Routes::with_metrics(Pools::new(pool).with_metrics(metrics.pool()), metrics.clone()));
    let (_, health) = tonic_health::server::health_reporter();
    let connections = metrics.connections();
    let server = Server::new(Forwarder::new(routes.clone()))
        .service("grpc.health.v1.Health", TowerHandler(health))
        .settings(settings)
        .connection_metrics(connections);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, signal) = shutdown_signal();
    let task = tokio::spawn(server.serve(listener, signal));
    let p = Proxy { addr, routes, shutdown, task };
    p.set_routes(yaml);
    p
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub async fn client(addr: SocketAddr) -> EchoClient<Channel> {
    EchoClient::new(channel(addr).await).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

pub fn req(payload: &[u8]) -> EchoRequest {
    EchoRequest { payload: payload.to_vec(), count: 0 }
}

/// Polls `check` until it holds or 10 s pass.
pub async fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), check).await
}

/// Polls `check` until it holds, failing after `limit`.
pub async fn eventually_within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
