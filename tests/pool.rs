//! Backend connection management: reuse, idle close, and keep-alive PINGs that detect a dead peer.

mod support;

use std::time::Duration;

use support::*;
use switchboard::proxy::{PoolSettings, ProxyTable};
use switchboard::table::Target;

fn connections(table: &ProxyTable) -> usize {
    let Some(Target::Backend(b)) = table.rules()[0].backends.targets().next() else { panic!("no backend") };
    b.endpoints[0].connections()
}

#[tokio::test]
async fn connections_are_reused_and_idle_ones_closed() {
    let b = backend("alpha").await;
    let settings = PoolSettings {
        idle_timeout: Duration::from_millis(300),
        keepalive_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let p = proxy_with(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]), settings).await;
    let mut via = client(p.addr).await;
    for _ in 0..20 {
        via.unary(req(b"x")).await.unwrap();
    }
    assert_eq!(connections(&p.routes.load()), 1, "sequential calls share one connection");
    eventually("idle connection closed", || connections(&p.routes.load()) == 0).await;
    assert_eq!(via.unary(req(b"again")).await.unwrap().into_inner().backend, "alpha", "a new one is opened");
    assert_eq!(connections(&p.routes.load()), 1);
}

/// A backend that completes the HTTP/2 handshake and then stops reading: PINGs go unanswered, the
/// connection is dropped from the pool.
#[tokio::test]
async fn unanswered_keepalive_closes_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stall_tx, stall_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        // Serve until the first stream arrives, then stop polling the connection (a hung peer).
        let (_req, mut send) = conn.accept().await.unwrap().unwrap();
        send.send_response(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "0")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
        let stalled = tokio::time::timeout(Duration::from_millis(100), conn.accept()).await;
        drop(stalled);
        let _ = stall_rx.await;
        drop(conn);
    });
    let settings = PoolSettings {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let p = proxy_with(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)])]), settings).await;
    let r = support::raw::raw_call(p.addr, "/raw.v1.Raw/Call", &[]).await;
    assert_eq!(r.headers["grpc-status"], "0");
    assert_eq!(connections(&p.routes.load()), 1);
    eventually("connection with unanswered PINGs dropped", || connections(&p.routes.load()) == 0).await;
    drop(stall_tx);
}
