//! Failover and passive health: a call whose connect fails (refused, or a peer that accepts TCP but never
//! speaks HTTP/2) goes to another endpoint of the backend, endpoints that keep failing are passed over and
//! ejected, and no call fails while a healthy endpoint is left.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use switchboard::proxy::PoolSettings;
use tokio::net::TcpListener;

/// An address nothing listens on: connects are refused.
async fn refusing() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

/// Accepts TCP connections and never reads or writes: the HTTP/2 handshake never completes.
async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_over_a_refusing_a_silent_and_a_healthy_endpoint_all_succeed() {
    let good = backend("good").await;
    let (refused, silent) = (refusing().await, black_hole().await);
    let mut settings = PoolSettings { connect_timeout: Duration::from_millis(300), ..Default::default() };
    settings.outlier.consecutive_failures = 2;
    let p = proxy_with("", settings).await;
    p.set_backend(ECHO, &[refused, silent, good.addr], "");
    let via = client(p.addr).await;
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (mut c, failed) = (via.clone(), failed.clone());
            tokio::spawn(async move {
                for _ in 0..1000 / 16 + 1 {
                    match c.unary(req(b"x")).await {
                        Ok(r) => assert_eq!(r.into_inner().backend, "good"),
                        Err(s) => {
                            eprintln!("failed: {s:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let m = p.routes.metrics();
    let connect_failures = m.connect_failures.with_label_values(&["backend"]).get();
    eprintln!("connect failures: {connect_failures}, ejections: {}", m.outlier_ejections.get());
    assert_eq!(failed.load(Ordering::SeqCst), 0, "every call failed over to the healthy endpoint");
    assert_eq!(good.seen.calls.load(Ordering::SeqCst), 16 * (1000 / 16 + 1));
    assert!(m.outlier_ejections.get() >= 1, "consecutive connect failures eject");
    // Backing-off and ejected endpoints are passed over: a fast-failing endpoint looks idle, and a picker that
    // went by load alone would try it on about half the calls.
    assert!(connect_failures < 100, "{connect_failures} connect attempts failed");
    // Each failed connect sent its call elsewhere, as did calls that waited on a connect that then failed.
    assert!(m.retries_unsent() >= connect_failures, "{} unsent retries", m.retries_unsent());
}

/// With every endpoint failing, calls still fail fast with UNAVAILABLE naming the problem, not hang.
#[tokio::test]
async fn with_no_healthy_endpoint_calls_fail_with_the_reason() {
    let (refused, silent) = (refusing().await, black_hole().await);
    let settings = PoolSettings { connect_timeout: Duration::from_millis(200), ..Default::default() };
    let p = proxy_with("", settings).await;
    p.set_backend(ECHO, &[refused, silent], "");
    let mut via = client(p.addr).await;
    let mut messages = Vec::new();
    for _ in 0..4 {
        let s = via.unary(req(b"x")).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
        messages.push(s.message().to_string());
    }
    let all = messages.join("\n");
    assert!(
        all.contains("Connection refused") || all.contains("no HTTP/2 answer") || all.contains("next attempt"),
        "{all}"
    );
}
