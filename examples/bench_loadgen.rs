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
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use pb::echo_client::EchoClient;
use pb::EchoRequest;
use tokio::time::Instant;
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
    /// NAME=PID (repeatable): report the CPU time that process used in the window.
    #[arg(long)]
    watch: Vec<String>,
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

async fn worker(mut client: EchoClient<Channel>, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < plan.end {
        match plan.method {
            Method::Unary => unary(&mut client, &plan, &mut tally).await,
            Method::Bidi => bidi(&mut client, &plan, &mut tally).await,
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
    let uri = if args.target.contains("://") { args.target.clone() } else { format!("http://{}", args.target) };
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
            Ok((name.to_owned(), pid.parse()?))
        })
        .collect::<Result<Vec<(String, u32)>, Error>>()?;

    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Endpoint::from_shared(uri.clone())?.tcp_nodelay(true).connect().await?;
        clients.push(EchoClient::new(channel));
    }

    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan { method: args.method, payload: vec![b'x'; args.payload], metadata, measure_from, end });
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| tokio::spawn(worker(clients[i % clients.len()].clone(), plan.clone())))
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

    let out = serde_json::json!({
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
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    // One worker per CPU this process may use, so `taskset -c 0` gives one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(run(args))
}
