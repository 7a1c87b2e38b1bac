//! The controller with the real kube client over HTTP against the in-process test API server: route and
//! endpoint changes reach the data plane (a forwarded call changes backend), status conditions, leader-only
//! status writes, Events, and recovery from injected faults.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::apiserver::handler::Verb;
use support::apiserver::store::Res;
use support::apiserver::ApiServer;
use support::*;
use switchboard::admin::Readiness;
use switchboard::controller::leader::LeaseConfig;
use switchboard::controller::{self, ControllerConfig};
use switchboard::crd::{GrpcRoute, GrpcRouteStatus};
use switchboard::metrics::Metrics;
use switchboard::proxy::{shutdown_signal, Forwarder, Pools, Routes, Server, ShutdownTrigger};

struct Cluster {
    api: ApiServer,
    proxy: SocketAddr,
    readiness: Arc<Readiness>,
    _shutdown: ShutdownTrigger,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

async fn start(api: ApiServer, lease: Option<LeaseConfig>) -> Cluster {
    let metrics = Metrics::new();
    let routes = Arc::new(Routes::with_metrics(Pools::new(Default::default()), metrics.clone()));
    let (health, _) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health);
    readiness.set_listening();
    let config = ControllerConfig { lease, debounce: Duration::from_millis(20), ..Default::default() };
    let controller = tokio::spawn(controller::run(api.client(), config, routes.clone(), readiness.clone(), metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (shutdown, signal) = shutdown_signal();
    tokio::spawn(Server::new(Forwarder::new(routes)).serve(listener, signal));
    Cluster { api, proxy, readiness, _shutdown: shutdown, controller }
}

fn service(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
           "spec": {"ports": [{"name": "grpc", "port": 80}]}})
}

/// An EndpointSlice of `svc` with one ready endpoint per backend (all on 127.0.0.1, each slice its own port).
fn slice(ns: &str, svc: &str, name: &str, backend: SocketAddr, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "ports": [{"name": "grpc", "port": backend.port()}],
           "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": ready}}]})
}

fn grpc_route(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute", "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn to_service(svc: &str) -> Value {
    json!({"rules": [{"matches": [{"method": {"service": ECHO}}], "backendRefs": [{"name": svc, "port": 80}]}]})
}

/// An API server holding Service `app/echo` with one ready endpoint (`backend`) and a GrpcRoute to it.
async fn echo_cluster(backend: SocketAddr) -> ApiServer {
    let api = ApiServer::start().await;
    api.apply(service("app", "echo"));
    api.apply(slice("app", "echo", "echo-1", backend, true));
    api.apply(grpc_route("app", "echo", to_service("echo")));
    api
}

async fn answered_by(proxy: SocketAddr) -> Result<String, tonic::Status> {
    client(proxy).await.unary(req(b"x")).await.map(|r| r.into_inner().backend)
}

/// Retries the call until its outcome satisfies `done` (a new table is in place within the debounce), 10 s at most.
async fn until(proxy: SocketAddr, want: &str, done: impl Fn(&Result<String, tonic::Status>) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = answered_by(proxy).await;
        if done(&got) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "wanted {want}, last answer {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_answered_by(proxy: SocketAddr, want: &str) {
    until(proxy, want, |got| matches!(got, Ok(b) if b == want)).await;
}

async fn until_code(proxy: SocketAddr, code: tonic::Code) {
    until(proxy, &format!("{code:?}"), |got| matches!(got, Err(s) if s.code() == code)).await;
}

/// The stored status (read untyped: some test routes are deliberately not valid GrpcRoutes).
fn status(api: &ApiServer, ns: &str, name: &str) -> Option<GrpcRouteStatus> {
    let obj = api.get(&Res::of::<GrpcRoute>(), ns, name)?;
    serde_json::from_value(obj.get("status")?.clone()).ok()
}

fn condition(s: &GrpcRouteStatus, t: &str) -> (String, String) {
    let c = s.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} in {s:?}"));
    (c.status.clone(), c.reason.clone())
}

fn status_writes(api: &ApiServer) -> usize {
    api.count(|r| r.verb == Verb::Patch && r.subresource.as_deref() == Some("status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_endpoints_reach_the_data_plane() {
    let (a, b) = (backend("a").await, backend("b").await);
    let api = echo_cluster(a.addr).await;
    let c = start(api, None).await;
    eventually("ready after the first sync", || c.readiness.is_ready()).await;
    until_answered_by(c.proxy, "a").await;

    // Status: accepted, refs resolved, written once with our field manager.
    eventually("status written", || status(&c.api, "app", "echo").is_some()).await;
    let s = status(&c.api, "app", "echo").unwrap();
    assert_eq!(condition(&s, "Accepted"), ("True".into(), "Accepted".into()));
    assert_eq!(condition(&s, "ResolvedRefs"), ("True".into(), "ResolvedRefs".into()));
    assert_eq!(s.observed_generation, Some(1));
    assert!(c.api.count(|r| r.field_manager.as_deref() == Some("switchboard") && r.verb == Verb::Patch) >= 1);

    // Endpoint change: the backend's pod is replaced.
    c.api.apply(slice("app", "echo", "echo-1", b.addr, true));
    until_answered_by(c.proxy, "b").await;
    // A not-ready endpoint gets no calls: UNAVAILABLE (no ready endpoints).
    c.api.apply(slice("app", "echo", "echo-1", b.addr, false));
    until_code(c.proxy, tonic::Code::Unavailable).await;
    c.api.apply(slice("app", "echo", "echo-1", a.addr, true));
    until_answered_by(c.proxy, "a").await;

    // Route update: point it at another Service.
    c.api.apply(service("app", "other"));
    c.api.apply(slice("app", "other", "other-1", b.addr, true));
    c.api.apply(grpc_route("app", "echo", to_service("other")));
    until_answered_by(c.proxy, "b").await;

    // Unchanged state writes no status again.
    let writes = status_writes(&c.api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.api.apply(slice("app", "other", "other-1", b.addr, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_writes(&c.api), writes, "status is written only when it changes");

    // Delete: UNIMPLEMENTED.
    c.api.delete(&Res::of::<GrpcRoute>(), "app", "echo");
    until_code(c.proxy, tonic::Code::Unimplemented).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_get_conditions_and_events_and_the_rest_keep_serving() {
    let a = backend("a").await;
    let api = ApiServer::start().await;
    api.apply(service("app", "echo"));
    api.apply(slice("app", "echo", "echo-1", a.addr, true));
    api.apply(grpc_route("app", "good", to_service("echo")));
    // Not even a GrpcRoute shape (the test server does not validate, as a CRD without schema would not).
    api.apply(grpc_route("app", "garbled", json!({"rules": "not a list"})));
    // Valid shape, invalid content: a regex that does not compile.
    api.apply(grpc_route("app", "badregex", json!({"rules": [{"matches": [{"method": {"type": "RegularExpression", "service": "("}}], "backendRefs": [{"name": "echo", "port": 80}]}]})));
    // Unresolvable refs: missing Service, and cross-namespace without a ReferenceGrant.
    api.apply(grpc_route(
        "app",
        "missing",
        json!({"hostnames": ["m.example.com"], "rules": [{"backendRefs": [{"name": "nope", "port": 80}]}]}),
    ));
    api.apply(grpc_route("app", "crossns", json!({"hostnames": ["x.example.com"], "rules": [{"backendRefs": [{"name": "echo", "namespace": "elsewhere", "port": 80}]}]})));
    api.apply(service("elsewhere", "echo"));
    let c = start(api, None).await;
    until_answered_by(c.proxy, "a").await;

    eventually("all statuses written", || {
        ["garbled", "badregex", "missing", "crossns", "good"].iter().all(|n| status(&c.api, "app", n).is_some())
    })
    .await;
    let garbled = status(&c.api, "app", "garbled").unwrap();
    assert_eq!(condition(&garbled, "Accepted"), ("False".into(), "UnsupportedValue".into()));
    let bad = status(&c.api, "app", "badregex").unwrap();
    assert_eq!(condition(&bad, "Accepted").0, "False");
    assert!(bad.conditions[0].message.contains("regular expression"), "{bad:?}");
    assert_eq!(
        condition(&status(&c.api, "app", "missing").unwrap(), "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
    assert_eq!(
        condition(&status(&c.api, "app", "crossns").unwrap(), "ResolvedRefs"),
        ("False".into(), "RefNotPermitted".into())
    );
    // Their share of calls is UNAVAILABLE, never an HTTP error.
    let mut r = tonic::Request::new(req(b"x"));
    *r.metadata_mut() = tonic::metadata::MetadataMap::new();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.proxy))
        .unwrap()
        .origin("http://x.example.com".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let err = pb::echo_client::EchoClient::new(ch).unary(r).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // One Warning Event per rejected route.
    let events = c.api.list(&Res::new("events.k8s.io", "v1", "events"), Some("app"));
    for name in ["garbled", "badregex"] {
        assert!(
            events
                .iter()
                .any(|e| e["regarding"]["name"] == name && e["reason"] == "RouteRejected" && e["type"] == "Warning"),
            "no event for {name}: {events:?}"
        );
    }

    // A ReferenceGrant in the target namespace allows the cross-namespace ref.
    c.api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"namespace": "elsewhere", "name": "allow-app"},
        "spec": {"from": [{"group": "switchboard.dev", "kind": "GrpcRoute", "namespace": "app"}], "to": [{"group": "", "kind": "Service"}]}}));
    eventually("grant honoured", || {
        status(&c.api, "app", "crossns").is_some_and(|s| condition(&s, "ResolvedRefs").0 == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    // Someone else holds the lease, freshly renewed, for an hour.
    let now = k8s_openapi::jiff::Timestamp::now();
    api.apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"namespace": "sb", "name": "leader"},
        "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 3600, "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}}));
    let lease = LeaseConfig {
        namespace: "sb".into(),
        name: "leader".into(),
        identity: "me".into(),
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(100),
    };
    let c = start(api, Some(lease)).await;
    // Not the leader: it serves traffic but writes nothing.
    until_answered_by(c.proxy, "a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_writes(&c.api), 0, "a follower must not write status");
    assert!(status(&c.api, "app", "echo").is_none());

    // The other replica goes away (its lease expires): we take over and write.
    c.api.apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"namespace": "sb", "name": "leader"},
        "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 1, "renewTime": "2020-01-01T00:00:00.000000Z"}}));
    eventually("leader wrote status", || status(&c.api, "app", "echo").is_some()).await;
    let holder = c.api.get(&Res::new("coordination.k8s.io", "v1", "leases"), "sb", "leader").unwrap();
    assert_eq!(holder["spec"]["holderIdentity"], "me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_every_injected_fault() {
    let (a, b) = (backend("a").await, backend("b").await);
    let api = echo_cluster(a.addr).await;
    let c = start(api, None).await;
    until_answered_by(c.proxy, "a").await;

    // A watch dropped mid-stream resumes.
    c.api.drop_watches();
    c.api.apply(slice("app", "echo", "echo-1", b.addr, true));
    until_answered_by(c.proxy, "b").await;

    // History compacted (410 Gone for our resourceVersion): relist, not a crash.
    c.api.reset_history();
    c.api.apply(slice("app", "echo", "echo-1", a.addr, true));
    until_answered_by(c.proxy, "a").await;

    // The API server answers 500s for a while.
    c.api.fail_next(3, 500);
    c.api.drop_watches();
    c.api.apply(slice("app", "echo", "echo-1", b.addr, true));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while answered_by(c.proxy).await.ok().as_deref() != Some("b") {
        assert!(tokio::time::Instant::now() < deadline, "never recovered from 500s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it still serves from the last good table throughout.
    assert!(c.readiness.is_ready());
}
