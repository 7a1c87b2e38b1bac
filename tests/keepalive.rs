//! Keep-alive that real servers accept. grpc-go (like grpc-java and C-core) allows a client one PING per
//! 5 minutes while calls are open and none without calls, and answers more with GOAWAY(too_many_pings),
//! failing every call on the connection. switchboard's defaults send no HTTP/2 PINGs to backends (TCP
//! keep-alive finds dead peers), so a quiet call of any length and an idle pooled connection survive a
//! stock grpc-go server; PINGs are sent only when configured.

mod support;

use std::time::Duration;

use support::peers::{PeerServer, ServerConfig};
use support::*;
use switchboard::proxy::PoolSettings;

fn sleeping(ms: u64) -> tonic::Request<support::pb::EchoRequest> {
    let mut r = tonic::Request::new(req(b"quiet"));
    r.metadata_mut().insert("x-sleep-ms", ms.to_string().parse().unwrap());
    r
}

/// A call that sends nothing for 95 s, and a pooled connection that carries nothing for as long, against
/// stock grpc-go servers with switchboard's defaults.
#[tokio::test]
async fn a_95_second_quiet_call_and_an_idle_pooled_connection_survive_grpc_go_defaults() {
    let (quiet, idle) = (PeerServer::go(&ServerConfig::named("quiet")), PeerServer::go(&ServerConfig::named("idle")));
    let p = proxy(&routes_yaml(&[(ECHO, &[(quiet.addr, 1)])])).await;
    let idle_proxy = proxy(&routes_yaml(&[(ECHO, &[(idle.addr, 1)])])).await;
    let mut via_idle = client(idle_proxy.addr).await;
    assert_eq!(via_idle.unary(req(b"warm")).await.unwrap().into_inner().backend, "idle");

    let reply = client(p.addr).await.unary(sleeping(95_000)).await;
    assert_eq!(reply.map(|r| r.into_inner().backend).map_err(|s| s.to_string()), Ok("quiet".to_string()));

    // The idle connection is still the first one: never closed by the server.
    assert_eq!(via_idle.unary(req(b"again")).await.unwrap().into_inner().backend, "idle");
    for (name, server) in [("quiet", &quiet), ("idle", &idle)] {
        let stats = server.stats();
        assert_eq!(stats.too_many_pings, 0, "{name}: {stats:?}");
        assert_eq!(stats.connections_accepted, 1, "{name}: {stats:?}");
    }
    for proxy in [&p, &idle_proxy] {
        let goaways: u64 = ["NO_ERROR", "ENHANCE_YOUR_CALM", "OTHER"]
            .iter()
            .map(|c| proxy.routes.metrics().upstream_goaways.with_label_values(&[c]).get())
            .sum();
        assert_eq!(goaways, 0);
    }
}

/// The failure the defaults avoid, made visible: PINGs every second on a quiet call get the connection
/// closed by grpc-go's default policy, and switchboard counts the GOAWAY's code.
#[tokio::test]
async fn pings_beyond_the_servers_policy_end_in_too_many_pings() {
    let server = PeerServer::go(&ServerConfig::named("strict"));
    let settings = PoolSettings { keepalive_interval: Some(Duration::from_secs(1)), ..Default::default() };
    let p = proxy_with(&routes_yaml(&[(ECHO, &[(server.addr, 1)])]), settings).await;
    let status = client(p.addr).await.unary(sleeping(10_000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    eventually("the server's count", || server.stats().too_many_pings == 1).await;
    let calm = p.routes.metrics().upstream_goaways.with_label_values(&["ENHANCE_YOUR_CALM"]).get();
    assert_eq!(calm, 1);
}

/// PINGs as configured, within what the server allows, keep a quiet call alive.
#[tokio::test]
async fn configured_pings_within_the_servers_policy_are_fine() {
    let cfg = ServerConfig { keepalive_min_time: Some(Duration::from_millis(500)), ..ServerConfig::named("lenient") };
    let server = PeerServer::go(&cfg);
    let settings = PoolSettings { keepalive_interval: Some(Duration::from_secs(1)), ..Default::default() };
    let p = proxy_with(&routes_yaml(&[(ECHO, &[(server.addr, 1)])]), settings).await;
    assert_eq!(client(p.addr).await.unary(sleeping(5_000)).await.unwrap().into_inner().backend, "lenient");
    assert_eq!(server.stats().too_many_pings, 0);
}
