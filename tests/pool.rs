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
        keepalive_interval: Some(Duration::from_millis(50)),
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

/// A backend that takes a call and then stops reading its connection (a hung peer): the keep-alive PING
/// sent while the call is open goes unanswered, the connection is dropped from the pool, and the call fails
/// with UNAVAILABLE instead of hanging.
#[tokio::test]
async fn unanswered_keepalive_closes_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stall_tx, stall_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        // Polling the connection until the call arrives answers the proxy's handshake PING; then it hangs.
        let call = conn.accept().await.unwrap().unwrap();
        let _ = stall_rx.await;
        drop((call, conn));
    });
    let settings = PoolSettings {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let p = proxy_with(&routes_yaml(&[(ECHO, &[(addr, 1)])]), settings).await;
    let mut via = client(p.addr).await;
    let started = std::time::Instant::now();
    let status = via.unary(req(b"x")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("connection"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the hung connection was found by its PING");
    assert_eq!(connections(&p.routes.load()), 0);
    drop(stall_tx);
}
