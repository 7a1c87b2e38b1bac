//! Per-method metrics of service-level rules: a method gets its own `grpc_method` label once a backend
//! answered it (anything but UNIMPLEMENTED), at most `--max-methods-per-service` of them per service, and
//! random method names never grow the series beyond that.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use h2::RecvStream;
use http::uri::PathAndQuery;
use http::Request;
use tokio::net::TcpListener;

use support::*;
use switchboard::metrics::Metrics;
use switchboard::proxy::{shutdown_signal, BoxFuture, Error, Forwarder, Handler, Pools, Responder, Routes, Server};

/// The `grpc_method` values of `grpc_server_started_total` for `service`, with their counts.
fn started(metrics: &Metrics, service: &str) -> Vec<(String, u64)> {
    let prefix = "grpc_server_started_total{grpc_method=\"";
    let mut out: Vec<(String, u64)> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("grpc_service=\"{service}\"")))
        .map(|l| {
            let method = l[prefix.len()..].split('"').next().unwrap().to_string();
            (method, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The proxy in process, learning at most `cap` methods per service, serving `yaml`.
async fn proxy_capped(yaml: &str, cap: usize) -> (std::net::SocketAddr, Arc<Routes>) {
    let metrics = Metrics::new();
    let pools = Pools::new(Default::default()).with_metrics(metrics.pool());
    let routes = Arc::new(Routes::with_metrics(pools, metrics).max_methods_per_service(cap));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = shutdown_signal();
    // The proxy lives as long as the test's runtime.
    std::mem::forget(trigger);
    tokio::spawn(Server::new(Forwarder::new(routes.clone())).serve(listener, signal));
    let parsed = switchboard::standalone::parse_routes(std::path::Path::new("t.yaml"), yaml).unwrap();
    routes.swap(switchboard::standalone::build_table(&parsed).0);
    (addr, routes)
}

fn service_route(service: &str, port: u16) -> String {
    format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: r}}\nspec:\n  rules:\n    \
         - matches: [{{method: {{service: {service}}}, headers: [{{name: x-route, value: \"yes\"}}]}}]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n"
    )
}

/// Calls `path` with an empty message and the header the test route requires when `routed`; returns the code.
async fn call(addr: std::net::SocketAddr, path: &str, routed: bool) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::EchoRequest, pb::EchoReply>::default();
    let mut request = tonic::Request::new(req(b"x"));
    if routed {
        request.metadata_mut().insert("x-route", "yes".parse().unwrap());
    }
    match grpc.unary(request, PathAndQuery::try_from(path.to_string()).unwrap(), codec).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn methods_are_labelled_once_the_backend_answered_them() {
    let b = backend("alpha").await;
    let (addr, routes) = proxy_capped(&service_route(ECHO, b.addr.port()), 10).await;
    let unary = format!("/{ECHO}/Unary");
    for _ in 0..3 {
        assert_eq!(call(addr, &unary, true).await, tonic::Code::Ok);
    }
    // The backend does not know these: UNIMPLEMENTED from the backend teaches nothing.
    for i in 0..20 {
        assert_eq!(call(addr, &format!("/{ECHO}/Random{i}"), true).await, tonic::Code::Unimplemented);
    }
    // These match no route (the rule wants the header): never learned, whatever their method.
    for _ in 0..2 {
        assert_eq!(call(addr, &format!("/{ECHO}/ServerStream"), false).await, tonic::Code::Unimplemented);
    }
    let got = started(routes.metrics(), ECHO);
    // The first call of Unary counted under `unknown`, with the 20 random ones and the 2 unrouted ones.
    assert_eq!(got, [("Unary".to_string(), 2), ("unknown".to_string(), 23)], "{got:?}");
    b.stop().await;
}

/// A backend that answers every method OK: the worst case for cardinality, every random name "exists".
struct AnswersEverything;

impl Handler for AnswersEverything {
    fn call<'a>(&'a self, _: Request<RecvStream>, respond: &'a mut Responder) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            respond.send_status(tonic::Code::Ok, "");
            Ok(())
        })
    }
}

#[tokio::test]
async fn random_method_names_cannot_grow_the_series_beyond_the_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, signal) = shutdown_signal();
    tokio::spawn(Server::new(AnswersEverything).serve(listener, signal));
    let cap = 5;
    let yaml = service_route("rand.v1.Any", port);
    let (addr, routes) = proxy_capped(&yaml, cap).await;
    for i in 0..200 {
        call(addr, &format!("/rand.v1.Any/M{}", fastrand::u64(..) ^ i), true).await;
    }
    // A new table (same routes) keeps what was learned: the cap is per process, not per table.
    let parsed = switchboard::standalone::parse_routes(std::path::Path::new("t.yaml"), &yaml).unwrap();
    routes.swap(switchboard::standalone::build_table(&parsed).0);
    for i in 0..100 {
        call(addr, &format!("/rand.v1.Any/N{i}"), true).await;
    }
    let got = started(routes.metrics(), "rand.v1.Any");
    let labels: BTreeSet<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
    assert!(labels.contains("other") && labels.contains("unknown"), "{got:?}");
    assert_eq!(labels.len(), cap + 2, "{cap} learned methods, `unknown` and `other`: {got:?}");
    assert_eq!(got.iter().map(|(_, n)| n).sum::<u64>(), 300, "every call counted once: {got:?}");
    assert!(labels.iter().all(|m| !m.starts_with('N')), "the service was full before the second table: {got:?}");
}
