//! Chaos: a thousand route-table swaps while both endpoints of the backend restart, one after the other,
//! under load. No call fails: open calls keep the table they started with, a restarting endpoint drains
//! with GOAWAY, and calls go to the endpoint that is up.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

/// Restarts the backend named `name` on `addr` (graceful stop, 100 ms down, start), `times` times.
async fn restarts(mut backend: Backend, name: &'static str, addr: SocketAddr, times: usize) -> Backend {
    for _ in 0..times {
        tokio::time::sleep(Duration::from_millis(300)).await;
        backend.stop().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        backend = backend_on(name, TcpListener::bind(addr).await.unwrap()).await;
    }
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_table_swaps_and_backend_restarts_under_load_fail_no_call() {
    let (a, b) = (backend("a").await, backend("b").await);
    let (addr_a, addr_b) = (a.addr, b.addr);
    let p = proxy("").await;
    p.set_backend(ECHO, &[addr_a, addr_b], "");
    let via = client(p.addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let mut load = Vec::new();
    for i in 0..16 {
        let (mut c, stop, calls, failures) = (via.clone(), stop.clone(), calls.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let result = if i % 4 == 0 {
                    // A server stream of 5 replies, read to its end.
                    let r = support::pb::EchoRequest { payload: b"s".to_vec(), count: 5 };
                    match c.server_stream(r).await {
                        Ok(s) => s.into_inner().collect::<Result<Vec<_>, _>>().await.map(|v| assert_eq!(v.len(), 5)),
                        Err(e) => Err(e),
                    }
                } else {
                    c.unary(req(b"u")).await.map(drop)
                };
                calls.fetch_add(1, Ordering::SeqCst);
                if let Err(s) = result {
                    failures.lock().unwrap().push(s);
                }
            }
        }));
    }
    let swaps = {
        let routes = p.routes.clone();
        tokio::spawn(async move {
            for n in 0..1000 {
                // The same endpoints in another order, and other rules beside them, in turn.
                let extra = if n % 3 == 0 { "      timeout: 30s\n" } else { "" };
                let order = if n % 2 == 0 { [addr_a, addr_b] } else { [addr_b, addr_a] };
                set_backend(&routes, ECHO, &order, extra);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };
    let (a, b) = tokio::join!(restarts(a, "a", addr_a, 5), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        restarts(b, "b", addr_b, 5).await
    });
    swaps.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let calls = calls.load(Ordering::SeqCst);
    eprintln!(
        "{calls} calls, {} failed; {} GOAWAYs; retries: {}",
        failures.len(),
        p.routes.metrics().upstream_goaways.with_label_values(&["NO_ERROR"]).get(),
        p.routes
            .metrics()
            .render()
            .lines()
            .filter(|l| l.starts_with("switchboard_retries_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(failures.is_empty(), "{} of {calls} calls failed, e.g. {:?}", failures.len(), failures.first());
    assert!(calls > 1000, "the load ran: {calls} calls");
    assert!(p.routes.generation() >= 1000);
    drop((a, b));
}
