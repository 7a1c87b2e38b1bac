//! The gRPC listener: HTTP/2 connections, one task per stream, our own services by name and every other
//! method to the unknown-method handler.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::handler::{Handler, Responder};

/// HTTP/2 settings for client connections.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients.
    pub max_concurrent_streams: u32,
    /// HTTP/2 stream window advertised to clients.
    pub stream_window: u32,
    /// HTTP/2 connection window advertised to clients.
    pub connection_window: u32,
    /// Largest header list accepted from clients.
    pub max_header_list_size: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 2048,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 16 << 10,
        }
    }
}

/// A gRPC server: named services plus one handler for every unknown method.
pub struct Server {
    services: Vec<(String, Arc<dyn Handler>)>,
    unknown: Arc<dyn Handler>,
    settings: ServerSettings,
    connections: Option<prometheus::IntGauge>,
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
}

impl Server {
    /// A server that sends every method to `unknown`.
    pub fn new(unknown: impl Handler) -> Self {
        Self {
            services: Vec::new(),
            unknown: Arc::new(unknown),
            settings: ServerSettings::default(),
            connections: None,
        }
    }

    /// Counts open client connections in `gauge`.
    pub fn connection_gauge(mut self, gauge: prometheus::IntGauge) -> Self {
        self.connections = Some(gauge);
        self
    }

    /// Serves the gRPC service `name` (e.g. `grpc.health.v1.Health`) with `handler`.
    pub fn service(mut self, name: &str, handler: impl Handler) -> Self {
        self.services.push((format!("/{name}/"), Arc::new(handler)));
        self
    }

    /// Sets the HTTP/2 settings.
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Accepts connections until `shutdown`, then drains them; returns when the last one closed.
    pub async fn serve(self, listener: TcpListener, mut shutdown: Shutdown) -> std::io::Result<()> {
        let this = Arc::new(self);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let this = this.clone();
                        let shutdown = shutdown.clone();
                        conns.spawn(async move {
                            let gauge = this.connections.clone();
                            if let Some(g) = &gauge {
                                g.inc();
                            }
                            if let Err(e) = this.serve_connection(tcp, shutdown).await {
                                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                            }
                            if let Some(g) = &gauge {
                                g.dec();
                            }
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

    /// Serves one client connection until it closes; on `shutdown` sends a graceful GOAWAY and lets open
    /// streams finish.
    pub async fn serve_connection<IO>(self: Arc<Self>, io: IO, mut shutdown: Shutdown) -> Result<(), h2::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let s = &self.settings;
        let mut conn = h2::server::Builder::new()
            .max_concurrent_streams(s.max_concurrent_streams)
            .initial_window_size(s.stream_window)
            .initial_connection_window_size(s.connection_window)
            .max_header_list_size(s.max_header_list_size)
            .handshake::<_, Bytes>(io)
            .await?;
        let mut draining = false;
        loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((request, send))) => {
                        tokio::spawn(self.clone().serve_stream(request, send));
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                _ = shutdown.wait(), if !draining => {
                    draining = true;
                    // h2 sends the two-step GOAWAY: first with the maximum stream id, then the real last id.
                    conn.graceful_shutdown();
                }
            }
        }
    }

    async fn serve_stream(self: Arc<Self>, request: Request<RecvStream>, mut send: SendResponse<Bytes>) {
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
    }
}

fn is_grpc(request: &Request<RecvStream>) -> bool {
    request.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}
