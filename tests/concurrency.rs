//! Many streams on one client connection, and route table swaps under load.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use support::*;
use switchboard::table::Target;
use tokio_stream::StreamExt;

/// 1,000 bidi streams open at once on one client connection. The tonic backend allows fewer concurrent
/// streams per connection than that, so the pool must open more backend connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_connection() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let via = client(p.addr).await; // one Channel: one HTTP/2 connection
    let n = 1000;
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = via.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let mut replies =
                c.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
            tx.send(req(format!("{i}").as_bytes())).await.unwrap();
            let first = replies.next().await.unwrap().unwrap();
            assert_eq!(first.payload, format!("{i}").as_bytes());
            // Hold the stream open until all of them are open.
            barrier.wait().await;
            drop(tx);
            assert!(replies.next().await.is_none());
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), barrier.wait())
        .await
        .expect("all 1000 streams open at once");
    let table = p.routes.load();
    let Some(Target::Backend(backend)) = table.rules()[0].backends.targets().next() else { panic!() };
    let conns = backend.endpoints[0].connections();
    assert!(conns >= 2, "1000 streams over a backend limit of fewer needs several connections, got {conns}");
    for t in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(60), t).await.expect("streams finish").unwrap();
    }
    assert_eq!(b.seen.messages.load(Ordering::SeqCst), n);
}

/// Calls in flight keep the table they started with; new calls use the new one; nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_swapped_while_calls_are_in_flight() {
    let a = backend("a").await;
    let b = backend("b").await;
    let to_a = routes_yaml(&[(ECHO, &[(a.addr, 1)])]);
    let to_b = routes_yaml(&[(ECHO, &[(b.addr, 1)])]);
    let p = Arc::new(proxy(&to_a).await);
    let via = client(p.addr).await;

    // Long streams opened on table A.
    let mut open = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut c = via.clone();
        let replies = c.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        open.push((tx, replies));
    }
    // Unary calls in a loop while the table flips back and forth.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let mut c = via.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut ok = 0;
            while !stop.load(Ordering::Relaxed) {
                c.unary(req(b"x")).await.expect("no call fails during swaps");
                ok += 1;
            }
            ok
        }));
    }
    for i in 0..50 {
        p.set_routes(if i % 2 == 0 { &to_b } else { &to_a });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    p.set_routes(&to_b);
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        assert!(l.await.unwrap() > 0);
    }
    // The old streams still reach backend a.
    for (tx, mut replies) in open {
        tx.send(req(b"still here")).await.unwrap();
        assert_eq!(replies.next().await.unwrap().unwrap().backend, "a");
        drop(tx);
        assert!(replies.next().await.is_none());
    }
    let mut c = via.clone();
    assert_eq!(c.unary(req(b"x")).await.unwrap().into_inner().backend, "b");
}
