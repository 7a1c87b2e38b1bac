//! The gRPC listener: HTTP/2 connections, one task per stream, our own services by name and every other
//! method to the unknown-method handler.
//!
//! Client connections are held to limits, so that a bad or broken client costs little and cannot starve
//! the others: a deadline for the HTTP/2 preface, an idle timeout, keep-alive PINGs that find dead peers,
//! a cap on connections, a cap on calls per connection that holds until each call's handler has finished
//! (not only until its stream closed), and an end to connections whose client keeps cancelling its calls
//! right after opening them (rapid reset, CVE-2023-44487).
//!
//! With TLS, each connection's handshake takes the certificate current at that moment (it is reloaded from
//! files), and the identity of a verified client certificate rides along with each of the connection's calls
//! as a request extension, an `Arc<ClientIdentity>`.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::handler::{Handler, Responder};
use super::pool::connection_window;
use super::tcp;
use crate::tls::{ClientIdentity, ServerTls};

/// Limits and HTTP/2 settings for client connections.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients; also the most calls of one connection whose
    /// handlers may run at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 stream window advertised to clients. The connection window is this times
    /// `max_concurrent_streams` (within HTTP/2's limit), so stalled calls cannot block their neighbours.
    pub stream_window: u32,
    /// Largest header list accepted from clients.
    pub max_header_list_size: u32,
    /// A client must send the HTTP/2 preface within this time of connecting.
    pub handshake_timeout: Duration,
    /// A connection without calls for this long is closed with GOAWAY.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 PINGs to clients, which find peers that vanished; `None` sends none.
    pub keepalive_interval: Option<Duration>,
    /// A connection whose PING is not answered in this time is closed.
    pub keepalive_timeout: Duration,
    /// TCP keep-alive idle time on client sockets; `None` disables.
    pub tcp_keepalive: Option<Duration>,
    /// Most client connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A connection on which more calls than this were cancelled by the client within a second of
    /// starting, at least half of its calls, is closed with GOAWAY(ENHANCE_YOUR_CALM).
    pub max_premature_resets: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1024,
            stream_window: 1 << 20,
            max_header_list_size: 16 << 10,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(60)),
            max_connections: 10_000,
            max_premature_resets: 100,
        }
    }
}

/// A call cancelled by its client within this time of starting counts as a premature reset (Envoy's
/// `premature_reset_min_stream_lifetime_seconds`).
const PREMATURE: Duration = Duration::from_secs(1);

/// A gRPC server: named services plus one handler for every unknown method.
pub struct Server {
    services: Vec<(String, Arc<dyn Handler>)>,
    unknown: Arc<dyn Handler>,
    settings: ServerSettings,
    metrics: Option<ConnectionMetrics>,
    tls: Option<Arc<ServerTls>>,
}

/// What the server counts of its client connections.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    /// Open client connections.
    pub open: prometheus::IntGauge,
    /// Connections switchboard closed, by reason.
    pub closed: prometheus::IntCounterVec,
    /// TLS handshakes with clients, by result (`ok`, `failed`, `timeout`).
    pub tls_handshakes: prometheus::IntCounterVec,
}

impl ConnectionMetrics {
    fn closed(&self, reason: &str) {
        self.closed.with_label_values(&[reason]).inc();
    }
}

/// Tells a serving [`Server`] to drain: it stops accepting, sends GOAWAY and lets open streams finish.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A trigger and the signal it fires.
pub fn shutdown_signal() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Starts draining.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once draining starts. If the trigger is dropped without firing, it never resolves.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// [`Shutdown::wait`] as an owned future, for tasks that select on it in a loop.
    pub async fn into_wait(mut self) {
        self.wait().await
    }
}

/// Calls of one connection, for the rapid-reset check.
#[derive(Debug, Default)]
struct Calls {
    finished: AtomicU32,
    premature: AtomicU32,
}

impl Calls {
    fn too_many_premature(&self, max: u32) -> bool {
        let premature = self.premature.load(Ordering::Relaxed);
        premature > max && premature.saturating_mul(2) >= self.finished.load(Ordering::Relaxed)
    }
}

impl Server {
    /// A server that sends every method to `unknown`.
    pub fn new(unknown: impl Handler) -> Self {
        Self {
            services: Vec::new(),
            unknown: Arc::new(unknown),
            settings: ServerSettings::default(),
            metrics: None,
            tls: None,
        }
    }

    /// Serves clients over TLS with the (reloaded) config of `tls`, instead of cleartext HTTP/2.
    pub fn tls(mut self, tls: Arc<ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Counts client connections.
    pub fn connection_metrics(mut self, metrics: ConnectionMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the gRPC service `name` (e.g. `grpc.health.v1.Health`) with `handler`.
    pub fn service(mut self, name: &str, handler: impl Handler) -> Self {
        self.services.push((format!("/{name}/"), Arc::new(handler)));
        self
    }

    /// Sets the limits and HTTP/2 settings.
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Accepts connections until `shutdown`, then drains them; returns when the last one closed.
    pub async fn serve(self, listener: TcpListener, mut shutdown: Shutdown) -> std::io::Result<()> {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.settings.max_connections.min(Semaphore::MAX_PERMITS)));
        let mut conns = JoinSet::new();
        let mut warned_full: Option<Instant> = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            // Closing at once costs the client a reconnect, not a hung connection.
                            drop(tcp);
                            this.count_closed("max_connections");
                            if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                warned_full = Some(Instant::now());
                                tracing::warn!(max = this.settings.max_connections, "client connection limit reached; closing new connections");
                            }
                            continue;
                        };
                        tcp::configure(&tcp, this.settings.tcp_keepalive);
                        let this = this.clone();
                        let shutdown = shutdown.clone();
                        conns.spawn(async move {
                            let gauge = this.metrics.as_ref().map(|m| m.open.clone());
                            if let Some(g) = &gauge {
                                g.inc();
                            }
                            let served = match this.tls.clone() {
                                Some(tls) => this.serve_tls(tcp, &tls, shutdown).await,
                                None => this.serve_connection(tcp, shutdown).await,
                            };
                            if let Err(e) = served {
                                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                            }
                            if let Some(g) = &gauge {
                                g.dec();
                            }
                            drop(slot);
                        });
                    }
                    // Running out of file descriptors must not end the server.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = shutdown.wait() => break,
            }
        }
        drop(listener);
        while conns.join_next().await.is_some() {}
        Ok(())
    }

    fn count_closed(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.closed(reason);
        }
    }

    fn count_handshake(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.tls_handshakes.with_label_values(&[result]).inc();
        }
    }

    /// Serves one client connection until it closes; on `shutdown` sends a graceful GOAWAY and lets open
    /// streams finish.
    pub async fn serve_connection<IO>(self: Arc<Self>, io: IO, shutdown: Shutdown) -> Result<(), h2::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_h2(io, shutdown, None).await
    }

    /// The TLS handshake (within the handshake timeout), then HTTP/2 over it.
    async fn serve_tls(self: Arc<Self>, tcp: TcpStream, tls: &ServerTls, shutdown: Shutdown) -> Result<(), h2::Error> {
        let handshake = tls.acceptor().accept(tcp);
        let stream = match tokio::time::timeout(self.settings.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => {
                self.count_handshake("ok");
                stream
            }
            Ok(Err(e)) => {
                self.count_handshake("failed");
                self.count_closed("tls_handshake_failed");
                tracing::debug!(error = %e, "TLS handshake with a client failed");
                return Ok(());
            }
            Err(_) => {
                self.count_handshake("timeout");
                self.count_closed("handshake_timeout");
                return Ok(());
            }
        };
        let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
        let identity = peer.map(|cert| Arc::new(ClientIdentity::from_der(cert)));
        self.serve_h2(stream, shutdown, identity).await
    }

    async fn serve_h2<IO>(
        self: Arc<Self>,
        io: IO,
        mut shutdown: Shutdown,
        identity: Option<Arc<ClientIdentity>>,
    ) -> Result<(), h2::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let s = &self.settings;
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(s.max_concurrent_streams)
            .initial_window_size(s.stream_window)
            .initial_connection_window_size(connection_window(s.stream_window, s.max_concurrent_streams))
            .max_header_list_size(s.max_header_list_size)
            .handshake::<_, Bytes>(io);
        let Ok(conn) = tokio::time::timeout(s.handshake_timeout, handshake).await else {
            self.count_closed("handshake_timeout");
            return Ok(());
        };
        let mut conn = conn?;
        let ping = conn.ping_pong().expect("a new connection has its PingPong");
        let mut keepalive = std::pin::pin!(keepalive(ping, s.keepalive_interval, s.keepalive_timeout));
        let max_calls = s.max_concurrent_streams.max(1) as usize;
        let slots = Arc::new(Semaphore::new(max_calls));
        let calls = Arc::new(Calls::default());
        let every = (s.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_since = Instant::now();
        let (mut draining, mut closing) = (false, false);
        loop {
            // A slot for the next call; while none is free, the connection is driven without accepting.
            let slot = slots.clone().try_acquire_owned().ok();
            let accepting = slot.is_some();
            let next = poll_fn(|cx| match accepting {
                true => conn.poll_accept(cx),
                false => conn.poll_closed(cx).map(|r| r.err().map(Err)),
            });
            tokio::select! {
                next = next => match next {
                    Some(Ok((request, send))) => {
                        let slot = slot.expect("accepted with a slot");
                        tokio::spawn(self.clone().serve_stream(request, send, slot, calls.clone(), identity.clone()));
                        if !closing && calls.too_many_premature(s.max_premature_resets) {
                            closing = true;
                            self.count_closed("premature_resets");
                            tracing::warn!(premature = calls.premature.load(Ordering::Relaxed), "client cancels its calls as soon as it opens them; closing the connection");
                            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        }
                    }
                    Some(Err(e)) => {
                        if e.is_library() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                            // h2's own count of streams reset before they were accepted.
                            self.count_closed("premature_resets");
                        }
                        return Err(e);
                    }
                    None => return Ok(()),
                },
                _ = slots.clone().acquire_owned(), if slot.is_none() => {}
                _ = shutdown.wait(), if !draining => {
                    draining = true;
                    // h2 sends the two-step GOAWAY: first with the maximum stream id, then the real last id.
                    conn.graceful_shutdown();
                }
                failure = &mut keepalive => {
                    // The peer is gone: close the socket without waiting to flush a GOAWAY to it.
                    self.count_closed("keepalive_timeout");
                    tracing::debug!(error = %failure, "client connection closed");
                    return Ok(());
                }
                _ = tick.tick() => {
                    // Calls running: slots taken, not counting the one held for the next call.
                    let running = max_calls - slots.available_permits() - usize::from(slot.is_some());
                    if running > 0 {
                        idle_since = Instant::now();
                    } else if !draining && idle_since.elapsed() >= s.idle_timeout {
                        draining = true;
                        self.count_closed("idle");
                        conn.graceful_shutdown();
                    }
                }
            }
        }
    }

    async fn serve_stream(
        self: Arc<Self>,
        mut request: Request<RecvStream>,
        mut send: SendResponse<Bytes>,
        slot: OwnedSemaphorePermit,
        calls: Arc<Calls>,
        identity: Option<Arc<ClientIdentity>>,
    ) {
        if request.method() != http::Method::POST || !is_grpc(&request) {
            // The gRPC spec asks for 415 so that plain HTTP clients do not read a gRPC error as success.
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            res.headers_mut().insert("grpc-status", HeaderValue::from(tonic::Code::Internal as i32));
            res.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("not a gRPC request: expected POST with content-type application/grpc"),
            );
            let _ = send.send_response(res, true);
            return;
        }
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        let started = Instant::now();
        let mut respond = Responder::new(send);
        let path = request.uri().path();
        let handler = self
            .services
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or(&self.unknown, |(_, h)| h);
        let result = handler.call(request, &mut respond).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "call failed");
        }
        respond.finish(&result);
        if respond.was_cancelled_by_client() && started.elapsed() < PREMATURE {
            calls.premature.fetch_add(1, Ordering::Relaxed);
        }
        calls.finished.fetch_add(1, Ordering::Relaxed);
        drop(slot);
    }
}

/// PINGs the client every `interval`; returns why when one goes unanswered. Never returns without an interval.
async fn keepalive(mut ping: h2::PingPong, interval: Option<Duration>, timeout: Duration) -> String {
    let Some(interval) = interval else { return std::future::pending().await };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("keep-alive ping not answered within {timeout:?}"),
        }
    }
}

fn is_grpc(request: &Request<RecvStream>) -> bool {
    request.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}
