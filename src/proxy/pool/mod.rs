//! Backend connections: per endpoint, a set of multiplexed HTTP/2 connections shared by all calls.
//!
//! The hot path (`Endpoint::lease`) reads the connection list through an `ArcSwap` and claims a stream slot
//! with an atomic counter: no lock. Only opening a connection takes the endpoint's own async mutex, so a
//! connect (with its timeout and backoff) holds up only calls that need a new connection to that endpoint.
//!
//! A connection that refuses a new stream (it received GOAWAY, or it failed) is retired at once: later calls
//! open a fresh one while the old one finishes the streams it has.

mod connect;
mod health;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;

pub use self::health::OutlierSettings;
use self::health::{now_ms, Health};
use super::status::Error;
use crate::table::{EndpointAddr, Load};
use crate::tls::{BackendTls, BackendTlsSettings};

/// Connection settings for backends.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Limit on opening one connection: TCP, the HTTP/2 handshake, and the backend's answer to a first PING.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 PINGs on connections with calls open; `None` sends none. Servers limit PINGs
    /// (grpc-go, grpc-java and C-core allow one per 5 minutes by default and answer more with
    /// GOAWAY(too_many_pings)), so dead peers are found with TCP keep-alive instead.
    pub keepalive_interval: Option<Duration>,
    /// A connection whose PING is not answered in this time is closed.
    pub keepalive_timeout: Duration,
    /// TCP keep-alive idle time on backend sockets (probes every third of it, three times); `None` disables.
    pub tcp_keepalive: Option<Duration>,
    /// A connection with no calls for this long is closed.
    pub idle_timeout: Duration,
    /// First delay after a failed connect; doubles per failure.
    pub backoff_initial: Duration,
    /// Largest delay between connect attempts.
    pub backoff_max: Duration,
    /// HTTP/2 stream window we advertise to backends.
    pub stream_window: u32,
    /// Most calls on one backend connection (fewer if the backend's SETTINGS say so). The connection window
    /// is this many stream windows, so streams whose readers stall cannot block the others.
    pub max_streams_per_connection: u32,
    /// Largest response header list accepted from backends.
    pub max_header_list_size: u32,
    /// Ejection of endpoints that keep failing.
    pub outlier: OutlierSettings,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(30)),
            idle_timeout: Duration::from_secs(300),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            stream_window: 1 << 20,
            max_streams_per_connection: 100,
            max_header_list_size: 16 << 10,
            outlier: OutlierSettings::default(),
        }
    }
}

impl PoolSettings {
    /// The HTTP/2 connection window: a stream window for every stream the connection may carry.
    pub fn connection_window(&self) -> u32 {
        connection_window(self.stream_window, self.max_streams_per_connection)
    }
}

/// A connection window of `streams` stream windows, within HTTP/2's largest window.
pub fn connection_window(stream_window: u32, streams: u32) -> u32 {
    (u64::from(stream_window) * u64::from(streams.max(1))).min((1 << 31) - 1) as u32
}

/// The pools of all endpoints that current tables refer to.
#[derive(Debug)]
pub struct Pools {
    settings: Arc<PoolSettings>,
    /// By address and TLS settings: the same address with other TLS settings is another endpoint.
    endpoints: Mutex<Registry>,
    metrics: Arc<PoolMetrics>,
}

/// Endpoints by key, weakly: an endpoint lives as long as some table names it.
#[derive(Debug, Default)]
struct Registry {
    map: HashMap<EndpointKey, Weak<Endpoint>>,
    /// Entries alive after the last sweep of dead ones: the next sweep waits until the map has doubled, so
    /// binding a table of n new endpoints costs O(n), not O(n²).
    swept: usize,
}

/// What pools count.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    /// Open backend connections.
    pub connections: prometheus::IntGauge,
    /// Failed connects, labelled by backend.
    pub connect_failures: prometheus::IntCounterVec,
    /// Streams open to backends (calls and mirrors).
    pub streams: prometheus::IntGauge,
    /// Backend connections retired after a GOAWAY, by its error code.
    pub goaways: prometheus::IntCounterVec,
    /// Endpoints ejected as outliers.
    pub ejections: prometheus::IntCounter,
    /// Endpoints ejected now.
    pub ejected: prometheus::IntGauge,
}

impl Default for PoolMetrics {
    /// Unregistered metrics, for pools nobody scrapes.
    fn default() -> Self {
        let gauge = |n: &str| prometheus::IntGauge::new(n, n).expect("valid metric");
        let counter =
            |n: &str, l: &str| prometheus::IntCounterVec::new(prometheus::Opts::new(n, n), &[l]).expect("valid metric");
        Self {
            connections: gauge("connections"),
            connect_failures: counter("connect_failures", "backend"),
            streams: gauge("streams"),
            goaways: counter("goaways", "code"),
            ejections: prometheus::IntCounter::new("ejections", "ejections").expect("valid metric"),
            ejected: gauge("ejected"),
        }
    }
}

impl Pools {
    /// An empty registry.
    pub fn new(settings: PoolSettings) -> Self {
        Self { settings: Arc::new(settings), endpoints: Mutex::default(), metrics: Arc::new(PoolMetrics::default()) }
    }

    /// Counts into these metrics.
    pub fn with_metrics(mut self, metrics: PoolMetrics) -> Self {
        self.metrics = Arc::new(metrics);
        self
    }

    /// The endpoint for `addr`, shared with every table that names it (called when a table is bound, not per
    /// call), so connections and health survive table swaps.
    pub fn endpoint(&self, addr: &EndpointAddr) -> Arc<Endpoint> {
        self.endpoint_with(addr, None)
    }

    /// Like [`Pools::endpoint`], connecting over TLS when `tls` is given.
    pub fn endpoint_with(&self, addr: &EndpointAddr, tls: Option<&Arc<BackendTls>>) -> Arc<Endpoint> {
        let key = (addr.clone(), tls.map(|t| t.settings.clone()));
        let mut registry = self.endpoints.lock().expect("pool registry poisoned");
        if let Some(ep) = registry.map.get(&key).and_then(Weak::upgrade) {
            return ep;
        }
        if registry.map.len() >= 2 * registry.swept.max(64) {
            registry.map.retain(|_, w| w.strong_count() > 0);
            registry.swept = registry.map.len();
        }
        let mut ep = Endpoint::new(addr.clone(), self.settings.clone(), self.metrics.clone());
        ep.tls = tls.cloned();
        let ep = Arc::new(ep);
        registry.map.insert(key, Arc::downgrade(&ep));
        ep
    }
}

/// What tells endpoints apart: the address, and how TLS to it is set up.
type EndpointKey = (EndpointAddr, Option<BackendTlsSettings>);

/// One backend endpoint and its connections.
#[derive(Debug)]
pub struct Endpoint {
    addr: EndpointAddr,
    authority: http::uri::Authority,
    settings: Arc<PoolSettings>,
    conns: ArcSwap<Vec<Arc<Conn>>>,
    connect: tokio::sync::Mutex<Backoff>,
    /// Connect attempts finished, so that calls waiting for the connect lock can tell one was just made.
    attempts: AtomicU64,
    in_flight: AtomicUsize,
    health: Health,
    metrics: Arc<PoolMetrics>,
    /// Connect over TLS with these settings.
    tls: Option<Arc<BackendTls>>,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    /// When the last connect began.
    last_attempt: Option<Instant>,
    last_error: String,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    send: SendRequest<Bytes>,
    active: AtomicUsize,
    /// Out of the pool: closing, or it refused a stream.
    closed: AtomicBool,
    /// The backend's GOAWAY was counted.
    goaway_counted: AtomicBool,
    /// Milliseconds since `epoch` when the last call finished.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Conn {
    /// Stream slots: the backend's limit, within ours.
    fn capacity(&self, cap: u32) -> usize {
        self.send.current_max_send_streams().min(cap as usize)
    }

    /// Counts the backend's GOAWAY, once per connection, when `cause` (why the connection refuses streams)
    /// is one.
    fn count_goaway(&self, cause: &h2::Error, metrics: &PoolMetrics) -> bool {
        let goaway = cause.is_go_away() && cause.is_remote();
        if goaway && !self.goaway_counted.swap(true, Ordering::AcqRel) {
            let code = cause.reason().unwrap_or(h2::Reason::NO_ERROR);
            metrics.goaways.with_label_values(&[reason_label(code)]).inc();
        }
        goaway
    }
}

/// A claimed stream slot on one connection; released on drop.
#[derive(Debug)]
pub struct Lease {
    conn: Arc<Conn>,
    endpoint: Arc<Endpoint>,
}

impl Lease {
    fn new(conn: Arc<Conn>, endpoint: Arc<Endpoint>) -> Self {
        endpoint.metrics.streams.inc();
        Self { conn, endpoint }
    }

    /// A handle to open the stream with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }

    /// Takes the connection out of the pool after it refused a new stream (`cause`: it received GOAWAY, or
    /// failed); calls after this one open a fresh connection. Streams under way on it go on.
    pub fn retire(&self, cause: &h2::Error) {
        if self.conn.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.endpoint.remove(self.conn.id);
        if self.conn.count_goaway(cause, &self.endpoint.metrics) {
            tracing::debug!(endpoint = %self.endpoint.addr, conn = self.conn.id, code = ?cause.reason(), "backend sent GOAWAY; connection retired");
        } else {
            tracing::debug!(endpoint = %self.endpoint.addr, conn = self.conn.id, error = %cause, "backend connection retired");
        }
    }

    /// The endpoint this slot is on.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.metrics.streams.dec();
    }
}

/// A bounded label for an HTTP/2 error code.
fn reason_label(reason: h2::Reason) -> &'static str {
    match reason {
        h2::Reason::NO_ERROR => "NO_ERROR",
        h2::Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
        h2::Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
        h2::Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "OTHER",
    }
}

impl Load for Arc<Endpoint> {
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn available(&self) -> bool {
        self.health.available()
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(0);

impl Endpoint {
    fn new(addr: EndpointAddr, settings: Arc<PoolSettings>, metrics: Arc<PoolMetrics>) -> Self {
        let authority = addr.to_string().parse().unwrap_or_else(|_| http::uri::Authority::from_static("backend"));
        Self {
            addr,
            authority,
            settings,
            conns: ArcSwap::from_pointee(Vec::new()),
            connect: tokio::sync::Mutex::new(Backoff::default()),
            attempts: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            health: Health::default(),
            metrics,
            tls: None,
        }
    }

    /// Whether connections to this endpoint use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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

    /// Claims a stream slot on a connection with room, opening a connection if none has. While connects
    /// back off after failures, none is attempted, and the call goes elsewhere; but a call with nowhere else
    /// to go (every endpoint is failing) waits for a probe, one connect per initial back-off interval shared
    /// by the calls waiting, so an endpoint that came back is found at once rather than at the end of a
    /// long back-off.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, Error> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // From here on, a Lease (or the guard below) gives the in-flight count back.
        let guard = InFlight(self);
        if let Some(conn) = self.try_claim() {
            std::mem::forget(guard);
            return Ok(Lease::new(conn, self.clone()));
        }
        let last_resort = !self.health.available();
        let conn = self.open(last_resort).await?;
        std::mem::forget(guard);
        Ok(Lease::new(conn, self.clone()))
    }

    /// A slot on an open connection without waiting; otherwise starts opening one in the background (for
    /// best-effort work such as mirroring, which must never delay a call).
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = self.try_claim() {
            return Some(Lease::new(conn, self.clone()));
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

    /// The endpoint answered a call like a working backend.
    pub fn record_success(&self) {
        self.health.success(&self.settings.outlier);
    }

    /// The endpoint failed a call at the gateway level (not reachable, connection lost, HTTP 502/503/504).
    /// Enough of these in a row eject it, unless too much of `backend` (the endpoints it serves with) is
    /// ejected already.
    pub fn record_failure(self: &Arc<Self>, backend: &[Arc<Endpoint>]) {
        let ejected = |now| backend.iter().filter(|e| e.health.is_ejected(now)).count();
        let Some(time) = self.health.failure(&self.settings.outlier, ejected, backend.len()) else { return };
        self.metrics.ejections.inc();
        self.metrics.ejected.inc();
        tracing::warn!(endpoint = %self.addr, ejection = ?time, "endpoint ejected after consecutive failures");
        let this = Arc::downgrade(self);
        let gauge = self.metrics.ejected.clone();
        tokio::spawn(async move {
            tokio::time::sleep(time).await;
            gauge.dec();
            if let Some(ep) = this.upgrade() {
                ep.health.end_ejection();
                tracing::info!(endpoint = %ep.addr, "ejected endpoint returned to service");
            }
        });
    }

    fn try_claim(&self) -> Option<Arc<Conn>> {
        let conns = self.conns.load();
        let cap = self.settings.max_streams_per_connection;
        for c in conns.iter() {
            if c.closed.load(Ordering::Acquire) {
                continue;
            }
            let prev = c.active.fetch_add(1, Ordering::AcqRel);
            if prev < c.capacity(cap) {
                return Some(c.clone());
            }
            c.active.fetch_sub(1, Ordering::AcqRel);
        }
        None
    }

    async fn open(self: &Arc<Self>, last_resort: bool) -> Result<Arc<Conn>, Error> {
        let attempts = self.attempts.load(Ordering::Acquire);
        let mut backoff = self.connect.lock().await;
        // Another call may have opened a connection while we waited.
        if let Some(conn) = self.try_claim() {
            return Ok(conn);
        }
        let now = Instant::now();
        if let Some(at) = backoff.retry_at.filter(|at| *at > now) {
            // A connect that failed while this call waited for the lock answers for it too.
            let probed = self.attempts.load(Ordering::Acquire) != attempts;
            if !last_resort || probed {
                return Err(Error::Connect {
                    endpoint: self.addr.to_string(),
                    message: format!("{} (next attempt in {} ms)", backoff.last_error, (at - now).as_millis()),
                });
            }
            if let Some(due) = backoff.last_attempt.map(|t| t + self.settings.backoff_initial).filter(|d| *d > now) {
                // Holding the lock: the calls queueing behind take this probe's outcome.
                tokio::time::sleep_until(due.into()).await;
            }
        }
        backoff.last_attempt = Some(Instant::now());
        let connected = connect::connect(self, Instant::now() + self.settings.connect_timeout).await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match connected {
            Ok(conn) => {
                if backoff.failures > 0 {
                    tracing::info!(endpoint = %self.addr, after_failures = backoff.failures, "backend reachable again");
                }
                *backoff = Backoff::default();
                self.health.backing_off_until(None);
                conn.active.fetch_add(1, Ordering::AcqRel);
                self.conns.rcu(|list| {
                    let mut list = Vec::clone(list);
                    list.push(conn.clone());
                    list
                });
                Ok(conn)
            }
            Err(message) => {
                let delay = self
                    .settings
                    .backoff_initial
                    .saturating_mul(1 << backoff.failures.min(16))
                    .min(self.settings.backoff_max);
                // Jitter of up to 20% keeps many proxies from reconnecting in lockstep.
                let delay = delay.mul_f64(0.8 + fastrand::f64() * 0.2);
                // The address is not a label (bounded cardinality): failures count under "backend".
                self.metrics.connect_failures.with_label_values(&["backend"]).inc();
                if backoff.failures == 0 {
                    tracing::warn!(endpoint = %self.addr, error = %message, "backend connect failed; backing off");
                }
                backoff.failures += 1;
                backoff.retry_at = Some(Instant::now() + delay);
                self.health.backing_off_until(Some(now_ms() + delay.as_millis() as u64));
                backoff.last_error = message.clone();
                Err(Error::Connect { endpoint: self.addr.to_string(), message })
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> EndpointAddr {
        EndpointAddr::Socket(std::net::SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 8080)))
    }

    #[tokio::test]
    async fn endpoints_are_shared_while_named_and_forgotten_after() {
        let pools = Pools::new(PoolSettings::default());
        let kept: Vec<_> = (0..1000).map(|i| pools.endpoint(&addr(i))).collect();
        assert!(Arc::ptr_eq(&kept[7], &pools.endpoint(&addr(7))), "one endpoint per address");
        // Tables come and go: endpoints no table names any more are swept as new ones arrive.
        for round in 1..20u32 {
            let table: Vec<_> = (0..1000).map(|i| pools.endpoint(&addr(round * 10_000 + i))).collect();
            drop(table);
        }
        let len = pools.endpoints.lock().unwrap().map.len();
        assert!(len <= 4 * 1000 + 64, "the registry holds {len} entries for 1000 live endpoints");
        assert!(Arc::ptr_eq(&kept[999], &pools.endpoint(&addr(999))));
    }
}
