//! Closed-loop load generator for `switchboard.echo.v1.Echo`, used by `make bench`.
//!
//! `--concurrency` workers are spread round-robin over `--connections` HTTP/2
//! connections, and each has one call in flight at a time. With `--method bidi`
//! a worker keeps one stream open and plays ping-pong on it: send a message,
//! wait for the echo, send the next; each echo counts as one call. Only calls
//! that finish inside the measured window (after `--warmup`) count. For each
//! `--watch NAME=PID` the CPU time (utime+stime) the process used in that
//! window is reported, in total and per call: on a small, noisy machine that
//! is a much steadier figure than throughput.
//!
//! With `--tls-ca` the connections speak TLS (rustls with ring, ALPN h2, the
//! server verified against that CA, no session resumption) and the output
//! counts the handshakes by protocol version, cipher suite, ALPN and kind.
//! With `--connection-per-call` every unary call opens its own connection
//! (TCP, TLS handshake, HTTP/2 handshake), makes the one call and closes it:
//! with TLS, one call is then one full handshake.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http::Uri;
use hyper_util::rt::TokioIo;
use pb::echo_client::EchoClient;
use pb::EchoRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub mod pb {
    tonic::include_proto!("switchboard.echo.v1");
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Clock ticks per second in `/proc/PID/stat`: the kernel's USER_HZ, which is
/// 100 on every architecture this runs on (`getconf CLK_TCK`).
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    /// One unary call at a time per worker.
    Unary,
    /// One long-lived bidi stream per worker, one message in flight on it.
    Bidi,
}

#[derive(Parser)]
#[command(about = "Closed-loop load generator for switchboard.echo.v1.Echo")]
struct Args {
    /// Where to send calls: host:port or http://host:port (h2c).
    #[arg(long, env = "BENCH_TARGET")]
    target: String,
    /// Kind of call.
    #[arg(long, value_enum, default_value = "unary")]
    method: Method,
    /// Calls in flight (bidi: streams doing ping-pong).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// HTTP/2 connections; workers are assigned to them round-robin.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before the measured window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Request payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Extra request metadata KEY=VALUE (repeatable), e.g. `x-fail=14`.
    #[arg(long = "metadata")]
    metadata: Vec<String>,
    /// NAME=PID (repeatable): report the CPU time that process used in the window; PID `self` is this
    /// load generator.
    #[arg(long)]
    watch: Vec<String>,
    /// PEM CA bundle: connect with TLS (ALPN h2) and verify the server's certificate against it.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry (sent as SNI if a DNS name). Default: the target's host.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Unary only: a new connection for every call (connect, handshakes, one call, close); `--connections` is
    /// ignored.
    #[arg(long)]
    connection_per_call: bool,
    /// Free-form label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object on one line instead of text.
    #[arg(long)]
    json: bool,
}

/// Read-only settings shared by all workers.
struct Plan {
    method: Method,
    payload: Vec<u8>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    measure_from: Instant,
    end: Instant,
}

impl Plan {
    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        for (k, v) in &self.metadata {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        req
    }

    fn msg(&self) -> EchoRequest {
        EchoRequest { payload: self.payload.clone(), count: 1 }
    }

    fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_from && t <= self.end
    }
}

/// What one worker saw in the measured window.
struct Tally {
    latency_ns: Histogram<u64>,
    codes: BTreeMap<i32, u64>,
    backends: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency_ns: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds"),
            codes: BTreeMap::new(),
            backends: BTreeMap::new(),
        }
    }

    fn ok(&mut self, start: Instant, done: Instant, md: &MetadataMap) {
        self.latency_ns.saturating_record((done - start).as_nanos() as u64);
        *self.codes.entry(Code::Ok as i32).or_default() += 1;
        self.backend(md);
    }

    fn err(&mut self, status: &Status) {
        *self.codes.entry(status.code() as i32).or_default() += 1;
        self.backend(status.metadata());
    }

    fn backend(&mut self, md: &MetadataMap) {
        let name = md.get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("-");
        match self.backends.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.backends.insert(name.to_owned(), 1);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_ns.add(&other.latency_ns).expect("same histogram bounds");
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in other.backends {
            *self.backends.entry(k).or_default() += v;
        }
    }
}

/// Where a worker's calls go.
#[derive(Clone)]
enum Conn {
    /// One of the `--connections` long-lived connections.
    Shared(EchoClient<Channel>),
    /// A connection of its own for every call.
    PerCall(Arc<Dialer>),
}

/// How to open a connection of the target's.
struct Dialer {
    endpoint: Endpoint,
    connector: Connector,
}

async fn worker(mut conn: Conn, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < plan.end {
        match (&mut conn, plan.method) {
            (Conn::Shared(client), Method::Unary) => unary(client, &plan, &mut tally).await,
            (Conn::Shared(client), Method::Bidi) => bidi(client, &plan, &mut tally).await,
            (Conn::PerCall(dialer), _) => unary_new_connection(dialer, &plan, &mut tally).await,
        }
    }
    tally
}

async fn unary(client: &mut EchoClient<Channel>, plan: &Plan, tally: &mut Tally) {
    let start = Instant::now();
    let res = client.unary(plan.request(plan.msg())).await;
    let done = Instant::now();
    if plan.in_window(done) {
        match res {
            Ok(resp) => tally.ok(start, done, resp.metadata()),
            Err(status) => tally.err(&status),
        }
    }
}

/// One unary call on a connection of its own, closed once the call is done; the latency includes the
/// connection's set-up.
async fn unary_new_connection(dialer: &Dialer, plan: &Plan, tally: &mut Tally) {
    let start = Instant::now();
    let res = match dialer.endpoint.connect_with_connector(dialer.connector.clone()).await {
        Ok(channel) => EchoClient::new(channel).unary(plan.request(plan.msg())).await,
        Err(e) => Err(Status::unavailable(format!("connect: {e:?}"))),
    };
    let done = Instant::now();
    if plan.in_window(done) {
        match res {
            Ok(resp) => tally.ok(start, done, resp.metadata()),
            Err(status) => tally.err(&status),
        }
    }
}

/// One stream doing ping-pong until the end of the run.
async fn bidi(client: &mut EchoClient<Channel>, plan: &Plan, tally: &mut Tally) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut sent = Instant::now();
    // Queue the first message before opening the stream, so that a proxy that
    // waits for request data before it picks a route still forwards.
    if tx.send(plan.msg()).await.is_err() {
        return;
    }
    let req = plan.request(tokio_stream::wrappers::ReceiverStream::new(rx));
    let resp = match client.bidi_stream(req).await {
        Ok(resp) => resp,
        Err(status) => {
            if plan.in_window(Instant::now()) {
                tally.err(&status);
            }
            return;
        }
    };
    let (md, mut inbound, _) = resp.into_parts();
    loop {
        let res = inbound.message().await;
        let done = Instant::now();
        match res {
            Ok(Some(_)) if plan.in_window(done) => tally.ok(sent, done, &md),
            Ok(Some(_)) => {}
            Ok(None) => {
                if plan.in_window(done) {
                    tally.err(&Status::unknown("stream ended early"));
                }
                return;
            }
            Err(status) => {
                if plan.in_window(done) {
                    tally.err(&status);
                }
                return;
            }
        }
        if done >= plan.end {
            break;
        }
        sent = Instant::now();
        if tx.send(plan.msg()).await.is_err() {
            return;
        }
    }
    // Half-close, then drain so the trailers are read and the stream ends cleanly.
    drop(tx);
    while let Ok(Some(_)) = inbound.message().await {}
}

/// Opens the connections to the target: TCP (no Nagle), then TLS if configured.
#[derive(Clone)]
struct Connector {
    /// host:port
    addr: String,
    tls: Option<Arc<Tls>>,
}

/// The TLS client side, and what its handshakes negotiated.
struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// "version suite group alpn kind" -> handshakes with that outcome.
    handshakes: Mutex<BTreeMap<String, u64>>,
}

/// A connection, TLS or not.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Tls {
    fn new(ca: &std::path::Path, server_name: &str) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Every handshake a full one, as a new client's: what the server's certificate costs.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::try_from(server_name.to_owned())?,
            handshakes: Mutex::default(),
        })
    }
}

impl Connector {
    async fn connect(self) -> Result<Box<dyn Io>, Error> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = self.tls else { return Ok(Box::new(tcp)) };
        let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
        let conn = stream.get_ref().1;
        let alpn = conn.alpn_protocol().map_or("no-ALPN".into(), |p| String::from_utf8_lossy(p).into_owned());
        let outcome = format!(
            "{} {} {} {alpn} {}",
            debug_or_dash(conn.protocol_version()),
            debug_or_dash(conn.negotiated_cipher_suite().map(|s| s.suite())),
            debug_or_dash(conn.negotiated_key_exchange_group().map(|g| g.name())),
            debug_or_dash(conn.handshake_kind()),
        );
        *tls.handshakes.lock().expect("not poisoned").entry(outcome).or_default() += 1;
        if alpn != "h2" {
            return Err(format!("the server negotiated {alpn}, not h2").into());
        }
        Ok(Box::new(stream))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

fn debug_or_dash<T: std::fmt::Debug>(x: Option<T>) -> String {
    x.map_or("-".into(), |x| format!("{x:?}"))
}

/// CPU seconds (utime + stime, all threads) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; count fields after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn split_kv(s: &str) -> Result<(&str, &str), Error> {
    s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}").into())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(args: Args) -> Result<(), Error> {
    let scheme = if args.tls_ca.is_some() { "https" } else { "http" };
    let uri: Uri = if args.target.contains("://") {
        args.target.parse()?
    } else {
        format!("{scheme}://{}", args.target).parse()?
    };
    if args.connection_per_call && !matches!(args.method, Method::Unary) {
        return Err("--connection-per-call works with --method unary only".into());
    }
    let tls = match &args.tls_ca {
        Some(ca) => {
            let name = args.tls_server_name.as_deref().or(uri.host()).ok_or("the target has no host")?;
            Some(Arc::new(Tls::new(ca, name)?))
        }
        None => None,
    };
    let addr = uri.authority().ok_or("the target has no host:port")?.as_str().to_owned();
    let connector = Connector { addr, tls: tls.clone() };
    let metadata = args
        .metadata
        .iter()
        .map(|kv| {
            let (k, v) = split_kv(kv)?;
            Ok((k.parse()?, v.parse()?))
        })
        .collect::<Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, Error>>()?;
    let watch = args
        .watch
        .iter()
        .map(|kv| {
            let (name, pid) = split_kv(kv)?;
            let pid = if pid == "self" { std::process::id() } else { pid.parse()? };
            Ok((name.to_owned(), pid))
        })
        .collect::<Result<Vec<(String, u32)>, Error>>()?;

    let endpoint = Endpoint::from(uri);
    let mut conns = Vec::new();
    if args.connection_per_call {
        conns.push(Conn::PerCall(Arc::new(Dialer { endpoint, connector })));
    } else if tls.is_none() {
        for _ in 0..args.connections.max(1) {
            conns.push(Conn::Shared(EchoClient::new(endpoint.clone().tcp_nodelay(true).connect().await?)));
        }
    } else {
        for _ in 0..args.connections.max(1) {
            conns.push(Conn::Shared(EchoClient::new(endpoint.connect_with_connector(connector.clone()).await?)));
        }
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan { method: args.method, payload: vec![b'x'; args.payload], metadata, measure_from, end });
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| tokio::spawn(worker(conns[i % conns.len()].clone(), plan.clone())))
        .collect();

    let sample = || watch.iter().map(|(_, pid)| cpu_seconds(*pid)).collect::<Vec<_>>();
    tokio::time::sleep_until(measure_from).await;
    let cpu_before = sample();
    tokio::time::sleep_until(end).await;
    let cpu_after = sample();

    let mut total = Tally::new();
    for handle in workers {
        match tokio::time::timeout_at(end + Duration::from_secs(10), handle).await {
            Ok(tally) => total.merge(tally?),
            Err(_) => eprintln!("bench_loadgen: a worker was still busy 10 s after the end"),
        }
    }

    let secs = args.duration;
    let calls: u64 = total.codes.values().sum();
    let errors = calls - total.codes.get(&(Code::Ok as i32)).copied().unwrap_or(0);
    let rps = calls as f64 / secs;
    let q = |p: f64| total.latency_ns.value_at_quantile(p) as f64 / 1000.0;
    let codes: BTreeMap<String, u64> =
        total.codes.iter().map(|(c, n)| (format!("{:?}", Code::from_i32(*c)), *n)).collect();
    let mut cpu = serde_json::Map::new();
    for (((name, _), before), after) in watch.iter().zip(&cpu_before).zip(&cpu_after) {
        if let (Some(before), Some(after)) = (before, after) {
            let used = after - before;
            let per_call = if calls > 0 { used * 1e6 / calls as f64 } else { 0.0 };
            cpu.insert(name.clone(), serde_json::json!({"cpu_s": round3(used), "us_per_call": round3(per_call)}));
        }
    }

    let mut out = serde_json::json!({
        "label": args.label,
        "target": args.target,
        "method": format!("{:?}", args.method).to_lowercase(),
        "concurrency": args.concurrency,
        "connections": args.connections,
        "payload": args.payload,
        "duration_s": secs,
        "calls": calls,
        "errors": errors,
        "rps": rps,
        "p50_us": q(0.5),
        "p90_us": q(0.9),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": total.latency_ns.max() as f64 / 1000.0,
        "mean_us": total.latency_ns.mean() / 1000.0,
        "codes": codes,
        "backends": total.backends,
        "cpu": cpu,
    });
    if args.connection_per_call {
        out["connection_per_call"] = true.into();
    }
    if let Some(tls) = &tls {
        // Every handshake of the run, the warm-up's and the closing ones' included.
        let handshakes = tls.handshakes.lock().expect("not poisoned").clone();
        out["tls"] = serde_json::json!({"handshakes": handshakes.values().sum::<u64>(), "outcomes": handshakes});
    }
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} {:?} c={} conns={} payload={}B {:.1}s",
            args.target, args.method, args.concurrency, args.connections, args.payload, secs
        );
        println!("  calls {calls}  errors {errors}  rps {rps:.1}");
        println!(
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            total.latency_ns.max() as f64 / 1000.0
        );
        println!("  status: {}", out["codes"]);
        println!("  backends: {}", out["backends"]);
        if !cpu.is_empty() {
            println!("  cpu: {}", serde_json::Value::Object(cpu));
        }
        if let Some(tls) = out.get("tls") {
            println!("  tls: {tls}");
        }
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    // One worker per CPU this process may use, so `taskset -c 0` gives one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(run(args))
}
