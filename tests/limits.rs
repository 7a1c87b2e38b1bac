//! Limits against bad clients, as Envoy and Linkerd have them: sockets that never speak HTTP/2, a
//! rapid-reset burst (CVE-2023-44487), more connections than allowed, oversized header lists, peers that stop
//! answering PINGs, idle connections; and the open-file limit raised at start. Other clients stay served.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::peers::{python_cmd, venv_python};
use support::process::{spawn_switchboard, Process};
use support::*;
use switchboard::proxy::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The switchboard binary serving `routes`, with `args`.
struct Binary {
    process: Process,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(routes: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, routes).unwrap();
        let mut all = vec!["--routes", file.to_str().unwrap()];
        all.extend_from_slice(args);
        let (process, addr, admin) = spawn_switchboard(dir.path(), &all).await;
        Self { process, addr, admin, _dir: dir }
    }

    /// The value of the series `series` (name and labels, as exposed), 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let text = support::peers::http_get(self.admin, "/metrics").unwrap();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }
}

async fn served(addr: SocketAddr, calls: usize) {
    let mut via = client(addr).await;
    for _ in 0..calls {
        assert_eq!(via.unary(req(b"still here")).await.unwrap().into_inner().backend, "echo");
    }
}

/// A rapid-reset burst of 20,000 streams on one connection, `delay_ms` between each batch's HEADERS and its
/// resets; returns the client's report and how many of the streams reached the backend.
async fn burst(target: &str, dir: &std::path::Path, delay_ms: &str, b: &Backend) -> (serde_json::Value, usize) {
    let before = b.seen.calls.load(Ordering::SeqCst);
    // Each call makes the backend busy for a second, so a reset finds it in flight.
    let args = ["--target", target, "rapid-reset", "20000", "--delay-ms", delay_ms, "--header", "x-sleep-ms=1000"];
    let mut burst = Process::spawn("burst", dir, &mut bad_client(&args));
    let lines = tokio::task::spawn_blocking(move || burst.stdout_lines(1, Duration::from_secs(120))).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let reached = b.seen.calls.load(Ordering::SeqCst) - before;
    eprintln!("rapid reset, {delay_ms} ms: {report}; {reached} reset streams reached the backend");
    assert_eq!(report["closed"], true, "switchboard ended the connection: {report}");
    if !report["goaway"].is_null() {
        assert_eq!(report["goaway"]["error_code"], 11, "GOAWAY(ENHANCE_YOUR_CALM): {report}");
    }
    (report, reached)
}

fn bad_client(args: &[&str]) -> std::process::Command {
    let mut cmd = python_cmd(&venv_python(), "bad_client.py");
    cmd.args(args).stdout(std::process::Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_a_rapid_reset_burst_leave_other_clients_served() {
    let b = backend("echo").await;
    let sb = Binary::start(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]), &["--client-handshake-timeout", "15s"]).await;
    let target = sb.addr.to_string();
    let dir = tempfile::tempdir().unwrap();

    // 2,000 sockets that connect and never send the HTTP/2 preface.
    let mut idle = Process::spawn("idle", dir.path(), &mut bad_client(&["--target", &target, "idle", "2000", "40"]));
    let idle_report = tokio::task::spawn_blocking(move || {
        let lines = idle.stdout_lines(2, Duration::from_secs(60));
        (idle, lines)
    });
    eventually_within("2,000 idle connections open", Duration::from_secs(30), || {
        sb.metric("switchboard_downstream_connections ") >= 2000.0
    })
    .await;
    served(sb.addr, 50).await;

    // A burst of streams opened and reset at once (the CVE's pattern): h2 counts streams reset before they
    // were accepted, and ends the connection before the calls reach a backend.
    let (report, reached) = burst(&target, dir.path(), "0", &b).await;
    let sent = report["sent"].as_u64().unwrap() as usize;
    assert!(sent < 20000 && reached * 100 <= sent, "{reached} of {sent} reset streams reached the backend");
    served(sb.addr, 20).await;
    // Streams reset only once switchboard forwarded them: its count of calls cancelled within a second of
    // starting ends the connection after --max-premature-resets (100).
    let (report, reached) = burst(&target, dir.path(), "50", &b).await;
    let sent = report["sent"].as_u64().unwrap() as usize;
    assert!(sent < 20000 && reached <= 300, "{reached} of {sent} reset streams reached the backend");
    served(sb.addr, 20).await;
    let ended = sb.metric("switchboard_downstream_connections_closed_total{reason=\"premature_resets\"}");
    assert_eq!(ended, 2.0, "both burst connections ended for their resets");

    // The handshake timeout closed every idle socket.
    let (_idle, lines) = idle_report.await.unwrap();
    let closed: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(closed["closed_by_server"], 2000, "{closed}");
    assert_eq!(sb.metric("switchboard_downstream_connections_closed_total{reason=\"handshake_timeout\"}"), 2000.0);
    served(sb.addr, 10).await;
    assert!(sb.process.log().lines().count() < 20, "no log line per connection:\n{}", sb.process.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let b = backend("echo").await;
    let sb = Binary::start(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]), &["--max-client-connections", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(sb.addr).await.unwrap());
    }
    eventually("three connections counted", || sb.metric("switchboard_downstream_connections ") == 3.0).await;
    let mut fourth = tokio::net::TcpStream::connect(sb.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the fourth connection is closed: {n:?}");
    assert_eq!(sb.metric("switchboard_downstream_connections_closed_total{reason=\"max_connections\"}"), 1.0);
    drop(held);
    eventually("slots freed", || sb.metric("switchboard_downstream_connections ") == 0.0).await;
    served(sb.addr, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_its_hard_limit() {
    let b = backend("echo").await;
    let sb = Binary::start(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]), &[]).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sb.process.child.0.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft limit at the hard limit: {line}");
}

/// A client that stops answering PINGs (a vanished peer) is closed; one without calls for the idle timeout
/// gets GOAWAY.
#[tokio::test]
async fn unresponsive_and_idle_clients_are_closed() {
    let b = backend("echo").await;
    let settings = ServerSettings {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let p = proxy_full(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]), Default::default(), settings).await;
    // The preface and SETTINGS, then silence: PINGs go unanswered.
    let mut mute = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    mute.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let closed = p.routes.metrics().downstream_closed.clone();
    eventually("the mute client is closed", || closed.with_label_values(&["keepalive_timeout"]).get() == 1).await;
    // A client that answers PINGs but makes no call is sent away once idle.
    let mut quiet = support::frames::FrameClient::connect(p.addr).await;
    let goaway = tokio::time::timeout(Duration::from_secs(5), quiet.next_goaway()).await.unwrap().unwrap();
    assert_eq!(goaway.error_code, 0, "a graceful GOAWAY: {goaway:?}");
    assert_eq!(closed.with_label_values(&["idle"]).get(), 1);
    served(p.addr, 3).await;
}

/// A header list above the limit fails that call only.
#[tokio::test]
async fn oversized_request_headers_fail_the_call_only() {
    let b = backend("echo").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut via = client(p.addr).await;
    let mut big = tonic::Request::new(req(b"x"));
    big.metadata_mut().insert("x-big", "x".repeat(32 << 10).parse().unwrap());
    assert!(via.unary(big).await.is_err());
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 0, "it never reached the backend");
    assert_eq!(via.unary(req(b"y")).await.unwrap().into_inner().backend, "echo", "the connection serves on");
}
