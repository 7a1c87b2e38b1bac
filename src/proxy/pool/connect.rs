//! Opening one backend connection (TCP, TLS when the backend has it, HTTP/2) and driving it until it ends:
//! its I/O, the handshake check, keep-alive PINGs (only when configured, only while calls are open) and
//! the idle close.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::{Conn, Endpoint, PoolSettings, CONN_IDS};
use crate::proxy::tcp;
use crate::table::EndpointAddr;

/// Opens a connection to `ep`. It is handed out only once the backend answered a PING: a server's first
/// frame is its SETTINGS, so the answer shows the peer speaks HTTP/2, and a peer that accepts TCP but never
/// answers counts as a failed connect (retried elsewhere) instead of swallowing calls.
/// The whole connect must be done by `deadline`.
pub(super) async fn connect(ep: &Arc<Endpoint>, deadline: Instant) -> Result<Arc<Conn>, String> {
    let timeout = ep.settings.connect_timeout;
    let tcp = tokio::time::timeout_at(deadline.into(), tcp_connect(&ep.addr))
        .await
        .map_err(|_| format!("TCP connect timed out after {timeout:?}"))??;
    tcp::configure(&tcp, ep.settings.tcp_keepalive);
    match &ep.tls {
        None => open(ep, tcp, deadline).await,
        Some(tls) => {
            let stream = tokio::time::timeout_at(deadline.into(), tls.connect(tcp))
                .await
                .map_err(|_| format!("TLS handshake timed out after {timeout:?}"))??;
            open(ep, stream, deadline).await
        }
    }
}

/// The HTTP/2 handshake over `io`, then the connection's task.
async fn open<IO>(ep: &Arc<Endpoint>, io: IO, deadline: Instant) -> Result<Arc<Conn>, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = &ep.settings;
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window())
        .max_header_list_size(s.max_header_list_size)
        .enable_push(false)
        // Until the backend's SETTINGS arrive, assume the RFC's recommended minimum rather than no limit,
        // so a burst of calls spreads over new connections instead of queueing on this one.
        .initial_max_send_streams(100.min(s.max_streams_per_connection as usize))
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let ping = connection.ping_pong().expect("a new connection has its PingPong");
    let conn = Arc::new(Conn {
        id: CONN_IDS.fetch_add(1, Ordering::Relaxed),
        send,
        active: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        goaway_counted: AtomicBool::new(false),
        idle_since: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let (ready_tx, ready_rx) = oneshot::channel();
    let link = Link { conn: Arc::downgrade(&conn), endpoint: Arc::downgrade(ep), settings: ep.settings.clone() };
    tokio::spawn(drive(connection, ping, link, deadline, ready_tx, ep.metrics.connections.clone()));
    match ready_rx.await {
        Ok(Ok(())) => {
            tracing::debug!(endpoint = %ep.addr, conn = conn.id, "backend connection open");
            Ok(conn)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err("connection closed during the HTTP/2 handshake".into()),
    }
}

async fn tcp_connect(addr: &EndpointAddr) -> Result<TcpStream, String> {
    match addr {
        EndpointAddr::Socket(a) => TcpStream::connect(a).await.map_err(|e| format!("connect: {e}")),
        EndpointAddr::Host { host, port } => {
            let addrs = tokio::net::lookup_host((&**host, *port)).await.map_err(|e| format!("resolve {host}: {e}"))?;
            let mut last = format!("resolve {host}: no addresses");
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = format!("connect {a}: {e}"),
                }
            }
            Err(last)
        }
    }
}

/// What the connection task knows of its pool, without keeping either alive.
struct Link {
    conn: Weak<Conn>,
    endpoint: Weak<Endpoint>,
    settings: Arc<PoolSettings>,
}

/// Drives one backend connection: first the handshake check by `deadline` (reported on `ready`), then its
/// I/O, keep-alive and idle close. Ends when the connection does.
async fn drive<IO>(
    connection: h2::client::Connection<IO, Bytes>,
    mut ping: h2::PingPong,
    link: Link,
    deadline: Instant,
    ready: oneshot::Sender<Result<(), String>>,
    gauge: prometheus::IntGauge,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    gauge.inc();
    let mut connection = std::pin::pin!(connection);
    let timeout = link.settings.connect_timeout;
    let checked = tokio::select! {
        r = &mut connection => Err(match r {
            Ok(()) => "backend closed the connection during the HTTP/2 handshake".to_string(),
            Err(e) => format!("HTTP/2 handshake: {e}"),
        }),
        r = tokio::time::timeout_at(deadline.into(), ping.ping(h2::Ping::opaque())) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("HTTP/2 handshake: {e}")),
            Err(_) => Err(format!("no HTTP/2 answer (SETTINGS, PING) within {timeout:?} of connecting")),
        },
    };
    let ok = checked.is_ok();
    // Handed out only if the pool still waits for it (its connect timeout may have passed).
    if ready.send(checked).is_ok() && ok {
        let outcome = tokio::select! {
            r = &mut connection => r.err().map(|e| e.to_string()),
            failure = maintain(&link, ping) => Some(failure),
        };
        let conn = link.conn.upgrade();
        if let Some(c) = &conn {
            c.closed.store(true, Ordering::Release);
        }
        if let (Some(ep), Some(c)) = (link.endpoint.upgrade(), conn) {
            let id = c.id;
            // A connection the backend rotated ends cleanly; the GOAWAY behind it is its stored error.
            if let Poll::Ready(Err(e)) = c.send.clone().poll_ready(&mut Context::from_waker(Waker::noop())) {
                c.count_goaway(&e, &ep.metrics);
            }
            ep.remove(id);
            match outcome {
                Some(e) => tracing::info!(endpoint = %ep.addr, conn = id, error = %e, "backend connection closed"),
                None => tracing::debug!(endpoint = %ep.addr, conn = id, "backend connection closed"),
            }
        }
    }
    gauge.dec();
}

/// Closes the connection when idle and, if configured, PINGs it while calls are open. Returns only when a
/// PING goes unanswered.
async fn maintain(link: &Link, mut ping: h2::PingPong) -> String {
    let settings = &link.settings;
    let every = match settings.keepalive_interval {
        Some(k) => k.min(settings.idle_timeout / 2),
        None => settings.idle_timeout / 2,
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_ping = Instant::now();
    loop {
        tick.tick().await;
        let Some(c) = link.conn.upgrade() else { return std::future::pending().await };
        if c.closed.load(Ordering::Acquire) {
            // Retired: it closes by itself once its last stream and handle are gone.
            return std::future::pending().await;
        }
        let active = c.active.load(Ordering::Acquire);
        let idle_ms = (c.epoch.elapsed().as_millis() as u64).saturating_sub(c.idle_since.load(Ordering::Relaxed));
        if active == 0 && Duration::from_millis(idle_ms) >= settings.idle_timeout {
            c.closed.store(true, Ordering::Release);
            if let Some(ep) = link.endpoint.upgrade() {
                ep.remove(c.id);
            }
            tracing::debug!(conn = c.id, "closing idle backend connection");
            return std::future::pending().await;
        }
        drop(c);
        let Some(interval) = settings.keepalive_interval else { continue };
        // No PINGs without calls: servers count those against the client (grpc-go's PermitWithoutStream).
        if active == 0 || last_ping.elapsed() < interval {
            continue;
        }
        last_ping = Instant::now();
        match tokio::time::timeout(settings.keepalive_timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("keep-alive ping not answered within {:?}", settings.keepalive_timeout),
        }
    }
}
