//! The controller with the real kube client over HTTP against the in-process test API server: route and
//! endpoint changes reach the data plane (a forwarded call changes backend), status conditions, leader-only
//! status writes, Events, and recovery from injected faults.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
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
    metrics: Metrics,
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
    start_with(api, ControllerConfig { lease, debounce: Duration::from_millis(20), ..Default::default() }).await
}

async fn start_with(api: ApiServer, config: ControllerConfig) -> Cluster {
    let metrics = Metrics::new();
    let routes = Arc::new(Routes::with_metrics(Pools::new(Default::default()), metrics.clone()));
    let (health, _) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health);
    readiness.set_listening();
    let (shutdown, signal) = shutdown_signal();
    let controller = tokio::spawn(controller::run(
        api.client(),
        config,
        routes.clone(),
        readiness.clone(),
        metrics.clone(),
        signal.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(Server::new(Forwarder::new(routes)).serve(listener, signal));
    Cluster { api, metrics, proxy, readiness, _shutdown: shutdown, controller }
}

fn service(ns: &str, name: &str) -> Value {
    k8s::service(ns, name, &[(Some("grpc"), 80, 50051)])
}

/// EndpointSlice `name` (`{svc}-{suffix}`) of `svc` with one endpoint, `backend`.
fn slice(ns: &str, svc: &str, name: &str, backend: SocketAddr, ready: bool) -> Value {
    let suffix = name.strip_prefix(&format!("{svc}-")).expect("slice names start with the Service name");
    let state = if ready { k8s::State::Ready } else { k8s::State::NotReady };
    k8s::slice(ns, svc, suffix, "grpc", &[(backend, state)])
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
    // The test server logs a request once it has answered it, after the change is visible: wait for the entry.
    eventually("the status patch logged, with our field manager", || {
        c.api.count(|r| r.field_manager.as_deref() == Some("switchboard") && r.verb == Verb::Patch) >= 1
    })
    .await;

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

    // Unchanged state writes no status again (status is written by its own task, after the table swap: wait
    // for the new generation's status first).
    eventually("status of the updated route", || {
        status(&c.api, "app", "echo").is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
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

    // One Warning Event per rejected route (published right after its status).
    let rejected = |name: &str| {
        let events = c.api.list(&Res::new("events.k8s.io", "v1", "events"), Some("app"));
        events
            .iter()
            .any(|e| e["regarding"]["name"] == name && e["reason"] == "RouteRejected" && e["type"] == "Warning")
    };
    eventually("an Event for each rejected route", || ["garbled", "badregex"].iter().all(|n| rejected(n))).await;

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
        duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        renew_every: Duration::from_millis(100),
        ..LeaseConfig::new("sb", "leader", "me")
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

/// `kubectl expose deployment echo --port 80 --target-port N`: one unnamed port, which the EndpointSlice
/// controller writes as `name: ""`. It used to resolve (ResolvedRefs=True) to no endpoints at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_service_port_gets_its_endpoints() {
    let a = backend("a").await;
    let api = ApiServer::start().await;
    api.apply(k8s::service("app", "echo", &[(None, 80, a.addr.port())]));
    api.apply(k8s::slice("app", "echo", "x7k2p", "", &[(a.addr, k8s::State::Ready)]));
    api.apply(grpc_route("app", "echo", to_service("echo")));
    let c = start(api, None).await;
    until_answered_by(c.proxy, "a").await;
}

/// Several slices per Service, and a rollout's end: the last ready pod gone, only terminating ones left,
/// which still serve (kube-proxy's fallback) until they are gone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_add_up_and_terminating_endpoints_serve_when_nothing_is_ready() {
    let (a, b) = (backend("a").await, backend("b").await);
    let api = ApiServer::start().await;
    api.apply(service("app", "echo"));
    api.apply(k8s::slice("app", "echo", "aaaaa", "grpc", &[(a.addr, k8s::State::Ready)]));
    api.apply(k8s::slice("app", "echo", "bbbbb", "grpc", &[(b.addr, k8s::State::Ready)]));
    api.apply(grpc_route("app", "echo", to_service("echo")));
    let c = start(api, None).await;
    until_answered_by(c.proxy, "a").await;
    until_answered_by(c.proxy, "b").await;

    c.api.apply(k8s::slice("app", "echo", "bbbbb", "grpc", &[(b.addr, k8s::State::Terminating)]));
    // b terminates while a is ready: only a (20 answers in a row from a, which two endpoints would all but
    // never give).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        in_a_row = if answered_by(c.proxy).await.unwrap() == "a" { in_a_row + 1 } else { 0 };
        assert!(tokio::time::Instant::now() < deadline, "the terminating endpoint still gets calls");
    }
    c.api.apply(k8s::slice("app", "echo", "aaaaa", "grpc", &[(a.addr, k8s::State::NotReady)]));
    until_answered_by(c.proxy, "b").await;
    c.api.apply(k8s::slice("app", "echo", "bbbbb", "grpc", &[(b.addr, k8s::State::NotReady)]));
    until_code(c.proxy, tonic::Code::Unavailable).await;
}

fn reference_grants() -> Res {
    Res::new("gateway.networking.k8s.io", "v1beta1", "referencegrants")
}

fn cross_namespace_cluster(api: &ApiServer, backend: SocketAddr) {
    api.apply(service("elsewhere", "echo"));
    api.apply(slice("elsewhere", "echo", "echo-1", backend, true));
    api.apply(grpc_route(
        "app",
        "crossns",
        json!({"rules": [{"backendRefs": [{"name": "echo", "namespace": "elsewhere", "port": 80}]}]}),
    ));
    api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"namespace": "elsewhere", "name": "allow-app"},
        "spec": {"from": [{"group": "switchboard.dev", "kind": "GrpcRoute", "namespace": "app"}], "to": [{"group": "", "kind": "Service"}]}}));
}

/// Watching two namespaces (a namespaced install), looking for missing APIs again every 200 ms.
fn namespaced_config() -> ControllerConfig {
    ControllerConfig {
        namespaces: vec!["app".into(), "elsewhere".into()],
        debounce: Duration::from_millis(20),
        optional_recheck: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A namespaced install on a cluster without the Gateway API CRDs: the controller becomes ready, serves, and
/// picks ReferenceGrants up once their CRD is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_reference_grant_crd_never_blocks_readiness() {
    let a = backend("a").await;
    let api = ApiServer::start().await;
    api.uninstall(&reference_grants());
    cross_namespace_cluster(&api, a.addr);
    let c = start_with(api, namespaced_config()).await;
    eventually("ready without ReferenceGrants", || c.readiness.is_ready()).await;
    eventually("refused without the CRD", || {
        status(&c.api, "app", "crossns").is_some_and(|s| condition(&s, "ResolvedRefs").1 == "RefNotPermitted")
    })
    .await;
    c.api.install(&reference_grants());
    until_answered_by(c.proxy, "a").await;
}

/// Role-only RBAC in each watched namespace, without a rule for ReferenceGrants: 403s. Ready anyway, and
/// the grants count once the Role allows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_reference_grants_never_block_readiness() {
    let a = backend("a").await;
    let api = ApiServer::start().await;
    cross_namespace_cluster(&api, a.addr);
    for scope in [None, Some("app"), Some("elsewhere")] {
        api.forbid(&reference_grants(), scope);
    }
    let c = start_with(api, namespaced_config()).await;
    eventually("ready although ReferenceGrants are forbidden", || c.readiness.is_ready()).await;
    until_code(c.proxy, tonic::Code::Unavailable).await;
    c.api.allow_all();
    until_answered_by(c.proxy, "a").await;
}

/// A status write that fails is retried with back-off on its own, without waiting for another change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_writes_are_retried() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    let c = start(api, None).await;
    until_answered_by(c.proxy, "a").await;
    eventually("status written", || status(&c.api, "app", "echo").is_some()).await;

    // Someone overwrites the status; our write of the right one fails twice.
    let bogus = json!({"conditions": [], "ruleCount": 7});
    let mut route = c.api.get(&Res::of::<GrpcRoute>(), "app", "echo").unwrap();
    route["status"] = bogus;
    let writes = status_writes(&c.api);
    c.api.fail_next(2, 500);
    c.api.apply(route);
    eventually("status put back after the failures", || {
        status(&c.api, "app", "echo").is_some_and(|s| s.rule_count == Some(1))
    })
    .await;
    assert!(status_writes(&c.api) > writes);
}

/// An Event note over the API server's 1 KiB limit is cut to fit, and a rejection is told once, not on every
/// rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_events_fit_and_are_not_repeated() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    // A header match whose regex is invalid; the message quotes it, over 1 KiB.
    let long = format!("({}", "x".repeat(1500));
    api.apply(grpc_route(
        "app",
        "bad",
        json!({"rules": [{"matches": [{"headers": [{"type": "RegularExpression", "name": "x-a", "value": long}]}],
                          "backendRefs": [{"name": "echo", "port": 80}]}]}),
    ));
    let c = start(api, None).await;
    let events = Res::new("events.k8s.io", "v1", "events");
    eventually("event recorded", || !c.api.list(&events, Some("app")).is_empty()).await;
    let listed = c.api.list(&events, Some("app"));
    let note = listed[0]["note"].as_str().unwrap();
    assert!(note.len() <= 1024, "note of {} bytes", note.len());
    // Rebuilds: endpoint churn.
    let (b, rebuilds) = (backend("b").await, c.metrics.reconciles.get());
    for i in 0..5 {
        let addr = if i % 2 == 0 { b.addr } else { a.addr };
        c.api.apply(slice("app", "echo", "echo-1", addr, true));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.metrics.reconciles.get() >= rebuilds + 3, "the table was rebuilt");
    let writes = c.api.count(|r| r.res.as_ref() == Some(&events) && matches!(r.verb, Verb::Create | Verb::Patch));
    assert_eq!(writes, 1, "one Event, never repeated");
}

/// Lease renewals change nothing for the table: they must not wake the rebuild loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_do_not_rebuild_the_table() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    let lease = LeaseConfig { renew_every: Duration::from_millis(50), ..LeaseConfig::new("sb", "leader", "me") };
    let c = start(api, Some(lease)).await;
    until_answered_by(c.proxy, "a").await;
    eventually("leading", || c.metrics.leader.get() == 1).await;
    eventually("status written", || status(&c.api, "app", "echo").is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rebuilds, renewals) = (c.metrics.reconciles.get(), lease_writes(&c.api));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(lease_writes(&c.api) >= renewals + 5, "the lease was renewed meanwhile");
    assert_eq!(c.metrics.reconciles.get(), rebuilds, "no rebuild for a renewal");
}

fn lease_writes(api: &ApiServer) -> usize {
    api.count(|r| r.res.as_ref().is_some_and(|r| r.plural == "leases") && r.verb == Verb::Update)
}

/// The chart's RBAC is exactly what the controller uses: every request of a run (leader election, status,
/// Events, every watch) is allowed by the rendered rules, and every verb the rules grant was used, but for
/// the Event patch (kube's Recorder patches an Event that repeats as a series, which a run here avoids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_rules_grant_exactly_what_the_controller_uses() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    api.apply(grpc_route("app", "bad", json!({"rules": "not a list"})));
    cross_namespace_cluster(&api, a.addr);
    // A BackendTLSPolicy (for a Service a route uses) is read with its ConfigMap and gets a status.
    api.apply(service("app", "unused"));
    api.apply(grpc_route(
        "app",
        "to-unused",
        json!({"rules": [{"matches": [{"method": {"service": "x.Unused"}}],
        "backendRefs": [{"name": "unused", "port": 80}]}]}),
    ));
    api.apply(backend_tls_policy("app", "unused-tls", "unused", "unused-ca", "unused.app.svc"));
    api.apply(config_map("app", "unused-ca", &support::tls::Ca::new("ca").pem()));
    let lease = LeaseConfig {
        renew_every: Duration::from_millis(100),
        ..LeaseConfig::new("switchboard", "switchboard-leader", "me")
    };
    let c = start(api, Some(lease)).await;
    until_answered_by(c.proxy, "a").await;
    let events = Res::new("events.k8s.io", "v1", "events");
    eventually("an Event for the bad route", || !c.api.list(&events, Some("app")).is_empty()).await;
    eventually("grants honoured", || {
        status(&c.api, "app", "crossns").is_some_and(|s| condition(&s, "ResolvedRefs").0 == "True")
    })
    .await;
    eventually("lease renewed", || lease_writes(&c.api) > 0).await;
    eventually("policy status", || !policy_conditions(&c.api, "app", "unused-tls").is_empty()).await;

    let verb = |v: Verb| match v {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::Other => "other",
    };
    let used: std::collections::BTreeSet<(String, String, &str)> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.verb != Verb::Other)
        .filter_map(|r| {
            let res = r.res?;
            let resource = match r.subresource {
                Some(sub) => format!("{}/{sub}", res.plural),
                None => res.plural,
            };
            Some((res.group, resource, verb(r.verb)))
        })
        .collect();

    let manifests =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/switchboard.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&manifests) {
        let doc = Value::deserialize(doc).unwrap();
        if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            let strings = |k: &str| -> Vec<String> {
                rule[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        granted.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    let granted: std::collections::BTreeSet<(String, String, &str)> =
        granted.iter().map(|(g, r, v)| (g.clone(), r.clone(), v.as_str())).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "requests the chart does not allow: {missing:?}");
    let series = ("events.k8s.io".to_string(), "events".to_string(), "patch");
    let unused: Vec<_> = granted.difference(&used).filter(|g| **g != series).collect();
    assert!(unused.is_empty(), "verbs the chart grants but the controller never uses: {unused:?}");
}

/// A rule's `clientIdentities` hold in cluster mode too: a client without a certificate (here, plaintext) is
/// refused with PERMISSION_DENIED, and dropping the list lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_allow_lists_are_enforced_in_cluster_mode() {
    let a = backend("a").await;
    let api = ApiServer::start().await;
    api.apply(service("app", "echo"));
    api.apply(slice("app", "echo", "echo-1", a.addr, true));
    let only = json!({"rules": [{"matches": [{"method": {"service": ECHO}}], "clientIdentities": ["spiffe://cluster.local/ns/shop/sa/checkout"],
        "backendRefs": [{"name": "echo", "port": 80}]}]});
    api.apply(grpc_route("app", "echo", only));
    let c = start(api, None).await;
    until_code(c.proxy, tonic::Code::PermissionDenied).await;
    c.api.apply(grpc_route("app", "echo", to_service("echo")));
    until_answered_by(c.proxy, "a").await;
}

fn config_map(ns: &str, name: &str, ca_pem: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": name}, "data": {"ca.crt": ca_pem}})
}

fn backend_tls_policy(ns: &str, name: &str, svc: &str, ca: &str, hostname: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": svc}],
            "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": ca}], "hostname": hostname}}})
}

/// Our entry's conditions in a BackendTLSPolicy's stored status: (type, status, reason) each.
fn policy_conditions(api: &ApiServer, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let Some(obj) = api.get(&Res::new("gateway.networking.k8s.io", "v1", "backendtlspolicies"), ns, name) else {
        return vec![];
    };
    let ancestors = obj["status"]["ancestors"].as_array().cloned().unwrap_or_default();
    let ours = ancestors.iter().find(|a| a["controllerName"] == "switchboard.dev/grpc-router");
    let conditions = ours.and_then(|a| a["conditions"].as_array().cloned()).unwrap_or_default();
    let s = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
    conditions.iter().map(|c| (s(c, "type"), s(c, "status"), s(c, "reason"))).collect()
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

/// A BackendTLSPolicy makes calls to its Service go over TLS, verified with the CA of its ConfigMap and its
/// hostname (a grpcio server with a certificate for that name); its status says Accepted. A ConfigMap
/// rotated to another CA, or a policy whose ConfigMap is missing, fails calls rather than falling back to
/// cleartext, and says why on the policy (status, Event) and on the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_policies_reach_services_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::Ca::new("backends");
    let config = support::tls::tls_config("grpcio-tls", dir.path(), &ca, &["echo.app.svc"], None);
    let server = support::peers::PeerServer::grpcio(&config);
    let api = echo_cluster(server.addr).await;
    // Another controller's entry, which our writes must keep.
    let mut policy = backend_tls_policy("app", "echo-tls", "echo", "echo-ca", "echo.app.svc");
    policy["status"] = json!({"ancestors": [{"ancestorRef": {"name": "gw"}, "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
    api.apply(policy);
    api.apply(config_map("app", "echo-ca", &ca.pem()));
    let c = start(api, None).await;
    // The first table already reaches the Service over TLS: no call ever went out in cleartext.
    eventually("ready", || c.readiness.is_ready()).await;
    assert_eq!(answered_by(c.proxy).await.unwrap(), "grpcio-tls");
    eventually("the policy accepted", || {
        policy_conditions(&c.api, "app", "echo-tls")
            == [triple("Accepted", "True", "Accepted"), triple("ResolvedRefs", "True", "ResolvedRefs")]
    })
    .await;
    let stored = c.api.get(&Res::new("gateway.networking.k8s.io", "v1", "backendtlspolicies"), "app", "echo-tls");
    assert_eq!(stored.unwrap()["status"]["ancestors"][0]["controllerName"], "example.com/gateway");

    // The CA rotated to one that did not issue the backend's certificate: new connections fail.
    c.api.apply(config_map("app", "echo-ca", &support::tls::Ca::new("other").pem()));
    until_code(c.proxy, tonic::Code::Unavailable).await;
    let e = answered_by(c.proxy).await.unwrap_err();
    assert!(e.message().contains("invalid peer certificate"), "{e:?}");

    // A policy whose ConfigMap is missing: no cleartext fallback; the route and the policy say why.
    c.api.apply(backend_tls_policy("app", "echo-tls", "echo", "missing-ca", "echo.app.svc"));
    until(c.proxy, "a BackendTLSPolicy message", |got| {
        matches!(got, Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("BackendTLSPolicy app/echo-tls"))
    })
    .await;
    eventually("the route's ResolvedRefs", || {
        status(&c.api, "app", "echo").is_some_and(|s| condition(&s, "ResolvedRefs").1 == "InvalidBackendTLSPolicy")
    })
    .await;
    eventually("the policy refused", || {
        policy_conditions(&c.api, "app", "echo-tls")
            == [
                triple("Accepted", "False", "NoValidCACertificate"),
                triple("ResolvedRefs", "False", "InvalidCACertificateRef"),
            ]
    })
    .await;
    let events = Res::new("events.k8s.io", "v1", "events");
    eventually("an Event on the policy", || {
        c.api.list(&events, Some("app")).iter().any(|e| e["reason"] == "BackendTLSPolicyRejected")
    })
    .await;

    // The policy deleted: cleartext again, which a TLS server refuses (no longer a TLS error from us).
    c.api.delete(&Res::new("gateway.networking.k8s.io", "v1", "backendtlspolicies"), "app", "echo-tls");
    until(c.proxy, "a call without TLS", |got| matches!(got, Err(s) if !s.message().contains("TLS"))).await;
}

/// `--backend-tls-client-cert`: backends a BackendTLSPolicy reaches over TLS and that require a client
/// certificate get this one (the Gateway API's `Gateway.spec.backendTLS.clientCertificateRef`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_that_require_client_certificates_get_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, proxies) = (support::tls::Ca::new("backends"), support::tls::Ca::new("proxies"));
    let path = |name: &str, pem: &str| support::tls::pem_path(dir.path(), name, pem).display().to_string();
    let config = support::tls::tls_config("grpcio-mtls", dir.path(), &ca, &["echo.app.svc"], Some(&proxies));
    let server = support::peers::PeerServer::grpcio(&config);
    let me = proxies.issue(&["spiffe://cluster.local/ns/switchboard/sa/switchboard"]);
    let (cert, key) = (path("me.pem", &me.cert_pem), path("me.key", &me.key_pem));
    let api = echo_cluster(server.addr).await;
    api.apply(backend_tls_policy("app", "echo-tls", "echo", "echo-ca", "echo.app.svc"));
    api.apply(config_map("app", "echo-ca", &ca.pem()));
    let config = ControllerConfig {
        debounce: Duration::from_millis(20),
        backend_client_cert: Some((cert.into(), key.into())),
        ..Default::default()
    };
    let c = start_with(api, config).await;
    until_answered_by(c.proxy, "grpcio-mtls").await;
}

/// ConfigMaps the controller may not read (an RBAC gap) leave BackendTLSPolicies' CAs unresolved: calls to
/// their Services fail, with the reason, instead of going out in cleartext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_config_maps_fail_closed() {
    let a = backend("a").await;
    let api = echo_cluster(a.addr).await;
    api.apply(backend_tls_policy("app", "echo-tls", "echo", "echo-ca", "echo.app.svc"));
    api.apply(config_map("app", "echo-ca", &support::tls::Ca::new("ca").pem()));
    api.forbid(&Res::new("", "v1", "configmaps"), None);
    let c = start(api, None).await;
    eventually("ready", || c.readiness.is_ready()).await;
    let e = answered_by(c.proxy).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("ConfigMaps cannot be read"), "{e:?}");
}
