//! Backend connections: per endpoint, a set of multiplexed HTTP/2 connections shared by all calls.
//!
//! The hot path (`Endpoint::lease`) reads the connection list through an `ArcSwap` and claims a stream slot
//! with an atomic counter: no lock. Only opening a connection takes the endpoint's own async mutex, so a
//! connect (with its timeout and backoff) holds up only calls that need a new connection to that endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;

use super::status::Error;
use crate::table::{EndpointAddr, Load};

/// Connection settings for backends.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Limit on establishing one TCP connection and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 PINGs on each backend connection.
    pub keepalive_interval: Duration,
    /// A connection whose PING is not answered in this time is closed.
    pub keepalive_timeout: Duration,
    /// A connection with no calls for this long is closed.
    pub idle_timeout: Duration,
    /// First delay after a failed connect; doubles per failure.
    pub backoff_initial: Duration,
    /// Largest delay between connect attempts.
    pub backoff_max: Duration,
    /// HTTP/2 stream window we advertise to backends.
    pub stream_window: u32,
    /// HTTP/2 connection window we advertise to backends.
    pub connection_window: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            stream_window: 1 << 20,
            connection_window: 4 << 20,
        }
    }
}

/// The pools of all endpoints that current tables refer to.
#[derive(Debug)]
pub struct Pools {
    settings: Arc<PoolSettings>,
    endpoints: Mutex<HashMap<EndpointAddr, Weak<Endpoint>>>,
    metrics: Option<PoolMetrics>,
}

/// What pools count: open backend connections and failed connects.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    /// Open backend connections.
    pub connections: prometheus::IntGauge,
    /// Failed connects, labelled by backend.
    pub connect_failures: prometheus::IntCounterVec,
}

impl Pools {
    /// An empty registry.
    pub fn new(settings: PoolSettings) -> Self {
        Self { settings: Arc::new(settings), endpoints: Mutex::new(HashMap::new()), metrics: None }
    }

    /// Counts connections and connect failures.
    pub fn with_metrics(mut self, metrics: PoolMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The endpoint for `addr`, shared with every table that names it (called when a table is bound, not per
    /// call), so connections survive table swaps.
    pub fn endpoint(&self, addr: &EndpointAddr) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().expect("pool registry poisoned");
        if let Some(ep) = map.get(addr).and_then(Weak::upgrade) {
            return ep;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let ep = Arc::new(Endpoint::new(addr.clone(), self.settings.clone(), self.metrics.clone()));
        map.insert(addr.clone(), Arc::downgrade(&ep));
        ep
    }
}

/// One backend endpoint and its connections.
#[derive(Debug)]
pub struct Endpoint {
    addr: EndpointAddr,
    authority: http::uri::Authority,
    settings: Arc<PoolSettings>,
    conns: ArcSwap<Vec<Arc<Conn>>>,
    connect: tokio::sync::Mutex<Backoff>,
    in_flight: AtomicUsize,
    metrics: Option<PoolMetrics>,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    send: SendRequest<Bytes>,
    active: AtomicUsize,
    closed: AtomicBool,
    /// Milliseconds since `epoch` when the last call finished.
    idle_since: AtomicU64,
    epoch: Instant,
}

/// A claimed stream slot on one connection; released on drop.
pub struct Lease {
    conn: Arc<Conn>,
    endpoint: Arc<Endpoint>,
}

impl Lease {
    /// A handle to open the stream with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load for Arc<Endpoint> {
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(0);

impl Endpoint {
    fn new(addr: EndpointAddr, settings: Arc<PoolSettings>, metrics: Option<PoolMetrics>) -> Self {
        let authority = addr.to_string().parse().unwrap_or_else(|_| http::uri::Authority::from_static("backend"));
        Self {
            addr,
            authority,
            settings,
            conns: ArcSwap::from_pointee(Vec::new()),
            connect: tokio::sync::Mutex::new(Backoff::default()),
            in_flight: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> &EndpointAddr {
        &self.addr
    }

    /// The `:authority` calls to this endpoint carry.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.load().len()
    }

    /// Claims a stream slot on a connection with room, opening a connection if none has.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, Error> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // From here on, a Lease (or the guard below) gives the in-flight count back.
        let guard = InFlight(self);
        if let Some(conn) = self.try_claim() {
            std::mem::forget(guard);
            return Ok(Lease { conn, endpoint: self.clone() });
        }
        let conn = self.open().await?;
        std::mem::forget(guard);
        Ok(Lease { conn, endpoint: self.clone() })
    }

    /// A slot on an open connection without waiting; otherwise starts opening one in the background (for
    /// best-effort work such as mirroring, which must never delay a call).
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = self.try_claim() {
            return Some(Lease { conn, endpoint: self.clone() });
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        // Start a connect only if none is under way or backing off: a mirror of a down backend must not spawn a
        // task per call.
        let idle = self.connect.try_lock().is_ok_and(|b| b.retry_at.is_none_or(|at| at <= Instant::now()));
        if idle {
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.lease().await;
            });
        }
        None
    }

    fn try_claim(&self) -> Option<Arc<Conn>> {
        let conns = self.conns.load();
        for c in conns.iter() {
            if c.closed.load(Ordering::Acquire) {
                continue;
            }
            let max = c.send.current_max_send_streams();
            let prev = c.active.fetch_add(1, Ordering::AcqRel);
            if prev < max {
                return Some(c.clone());
            }
            c.active.fetch_sub(1, Ordering::AcqRel);
        }
        None
    }

    async fn open(self: &Arc<Self>) -> Result<Arc<Conn>, Error> {
        let mut backoff = self.connect.lock().await;
        // Another call may have opened a connection while we waited.
        if let Some(conn) = self.try_claim() {
            return Ok(conn);
        }
        let now = Instant::now();
        if let Some(at) = backoff.retry_at.filter(|at| *at > now) {
            return Err(Error::Connect {
                endpoint: self.addr.to_string(),
                message: format!("{} (next attempt in {} ms)", backoff.last_error, (at - now).as_millis()),
            });
        }
        match tokio::time::timeout(self.settings.connect_timeout, self.connect_once()).await {
            Ok(Ok(conn)) => {
                if backoff.failures > 0 {
                    tracing::info!(endpoint = %self.addr, after_failures = backoff.failures, "backend reachable again");
                }
                *backoff = Backoff::default();
                conn.active.fetch_add(1, Ordering::AcqRel);
                self.conns.rcu(|list| {
                    let mut list = Vec::clone(list);
                    list.push(conn.clone());
                    list
                });
                Ok(conn)
            }
            result => {
                let message = match result {
                    Ok(Err(e)) => e,
                    _ => format!("connect timed out after {:?}", self.settings.connect_timeout),
                };
                let delay = self
                    .settings
                    .backoff_initial
                    .saturating_mul(1 << backoff.failures.min(16))
                    .min(self.settings.backoff_max);
                // Jitter of up to 20% keeps many proxies from reconnecting in lockstep.
                let delay = delay.mul_f64(0.8 + fastrand::f64() * 0.2);
                if let Some(m) = &self.metrics {
                    // The address is not a label (bounded cardinality): failures count under "backend".
                    m.connect_failures.with_label_values(&["backend"]).inc();
                }
                if backoff.failures == 0 {
                    tracing::warn!(endpoint = %self.addr, error = %message, "backend connect failed; backing off");
                }
                backoff.failures += 1;
                backoff.retry_at = Some(Instant::now() + delay);
                backoff.last_error = message.clone();
                Err(Error::Connect { endpoint: self.addr.to_string(), message })
            }
        }
    }

    async fn connect_once(self: &Arc<Self>) -> Result<Arc<Conn>, String> {
        let tcp = match &self.addr {
            EndpointAddr::Socket(a) => TcpStream::connect(a).await.map_err(|e| format!("connect: {e}"))?,
            EndpointAddr::Host { host, port } => {
                let addrs =
                    tokio::net::lookup_host((&**host, *port)).await.map_err(|e| format!("resolve {host}: {e}"))?;
                let mut last = format!("resolve {host}: no addresses");
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect(a).await {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = format!("connect {a}: {e}"),
                    }
                }
                found.ok_or(last)?
            }
        };
        let _ = tcp.set_nodelay(true);
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(self.settings.stream_window)
            .initial_connection_window_size(self.settings.connection_window)
            .enable_push(false)
            // Until the backend's SETTINGS arrive, assume the RFC's recommended minimum rather than no limit,
            // so a burst of calls spreads over new connections instead of queueing on this one.
            .initial_max_send_streams(100)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let conn = Arc::new(Conn {
            id: CONN_IDS.fetch_add(1, Ordering::Relaxed),
            send,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let ping = connection.ping_pong();
        let (weak, endpoint, settings) = (Arc::downgrade(&conn), Arc::downgrade(self), self.settings.clone());
        let gauge = self.metrics.as_ref().map(|m| m.connections.clone());
        if let Some(g) = &gauge {
            g.inc();
        }
        tokio::spawn(async move {
            drive(connection, ping, weak, endpoint, settings).await;
            if let Some(g) = gauge {
                g.dec();
            }
        });
        tracing::debug!(endpoint = %self.addr, conn = conn.id, "backend connection open");
        Ok(conn)
    }

    fn remove(&self, id: u64) {
        self.conns.rcu(|list| list.iter().filter(|c| c.id != id).cloned().collect::<Vec<_>>());
    }
}

struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives one backend connection: its I/O, keep-alive PINGs and idle close. Ends when the connection does.
async fn drive(
    connection: h2::client::Connection<TcpStream, Bytes>,
    ping: Option<h2::PingPong>,
    conn: Weak<Conn>,
    endpoint: Weak<Endpoint>,
    settings: Arc<PoolSettings>,
) {
    let id = conn.upgrade().map(|c| c.id).unwrap_or_default();
    let mut tick = tokio::time::interval(settings.keepalive_interval.min(settings.idle_timeout));
    tick.tick().await;
    let keepalive = async {
        let Some(mut ping) = ping else { return std::future::pending().await };
        loop {
            tick.tick().await;
            let Some(c) = conn.upgrade() else { return std::future::pending().await };
            let idle_ms = c.epoch.elapsed().as_millis() as u64 - c.idle_since.load(Ordering::Relaxed);
            if c.active.load(Ordering::Acquire) == 0 && Duration::from_millis(idle_ms) >= settings.idle_timeout {
                // Out of the pool; the connection closes once the last handle to it is gone.
                c.closed.store(true, Ordering::Release);
                if let Some(ep) = endpoint.upgrade() {
                    ep.remove(c.id);
                }
                tracing::debug!(conn = c.id, "closing idle backend connection");
                return std::future::pending().await;
            }
            drop(c);
            match tokio::time::timeout(settings.keepalive_timeout, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
                Err(_) => return format!("keep-alive ping not answered within {:?}", settings.keepalive_timeout),
            }
        }
    };
    let outcome = tokio::select! {
        r = connection => r.err().map(|e| e.to_string()),
        reason = keepalive => Some(reason),
    };
    if let Some(c) = conn.upgrade() {
        c.closed.store(true, Ordering::Release);
    }
    if let Some(ep) = endpoint.upgrade() {
        ep.remove(id);
        match outcome {
            Some(e) => tracing::info!(endpoint = %ep.addr, conn = id, error = %e, "backend connection closed"),
            None => tracing::debug!(endpoint = %ep.addr, conn = id, "backend connection closed"),
        }
    }
}
