//! Requests whose `:authority` is not a URI authority, as real clients send them, are served (grpc-go and
//! Envoy serve them; h2 alone would reset them with PROTOCOL_ERROR: vendor/README.md): grpcio's authority
//! for an `ipv4:` target list, and an Istio-style `outbound|port||host`.

mod support;

use support::peers::{Load, LoadClient};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorities_that_are_not_uri_authorities_are_served() {
    let b = backend("echo").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    // grpcio sends "127.0.0.1:P,127.0.0.1:P" as :authority for this target.
    let list = Load::calls(format!("ipv4:{0},{0}", p.addr), 20);
    let report = list.run(LoadClient::Grpcio).await;
    assert_eq!(report.ok(), 20, "{report:?}");
    let istio = Load {
        options: vec![("grpc.default_authority".into(), "outbound|8080||echo.team.svc.cluster.local".into())],
        ..Load::calls(p.addr.to_string(), 20)
    };
    let report = istio.run(LoadClient::Grpcio).await;
    assert_eq!(report.ok(), 20, "{report:?}");
    let seen = b.seen.last_metadata.lock().unwrap().clone().unwrap();
    assert!(seen.get("host").is_none(), "the raw authority is not forwarded as a header");
}
