//! The test API server against the real kube client: typed CRUD, patches and the status subresource,
//! watchers and reflectors through dropped watches, compacted history and 5xx answers, selectors, Leases.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_stream::StreamExt;

use support::apiserver::handler::Verb;
use support::apiserver::select::{FieldSelector, LabelSelector};
use support::apiserver::store::Res;
use support::apiserver::{ApiServer, Settings};
use support::eventually;
use switchboard::controller::leader::{self, LeaseConfig};
use switchboard::crd::{GrpcRoute, GrpcRouteSpec, GrpcRouteStatus};
use switchboard::metrics::Metrics;
use switchboard::proxy::{shutdown_signal, ShutdownTrigger};

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn route(name: &str, hostname: &str) -> GrpcRoute {
    GrpcRoute::new(name, GrpcRouteSpec { hostnames: vec![hostname.into()], rules: vec![] })
}

fn route_json(name: &str, hostname: &str) -> serde_json::Value {
    let mut r = route(name, hostname);
    r.metadata.namespace = Some("default".into());
    serde_json::to_value(r).unwrap()
}

/// Runs a reflector (with the default backoff, as the controller does) and records the errors it reports.
struct Reflected<K: Resource<DynamicType = ()> + 'static> {
    store: reflector::Store<K>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let task = tokio::spawn(async move {
            let mut stream = Box::pin(watcher(api, config).default_backoff().reflect(writer));
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        });
        Reflected { store, errors, task }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Reflected<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hostname(store: &reflector::Store<GrpcRoute>, name: &str) -> Option<String> {
    store.state().iter().find(|r| r.name_any() == name).map(|r| r.spec.hostnames.join(","))
}

/// Like `eventually`, for recoveries that wait out kube's default backoff (0.8 s doubling, with jitter).
async fn eventually_slow(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn typed_create_get_list_replace_delete() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");

    let created = api.create(&PostParams::default(), &config_map("a", &[("app", "x")])).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let err = api.create(&PostParams::default(), &config_map("a", &[])).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{err:?}");

    let got = api.get("a").await.unwrap();
    assert_eq!(got.resource_version(), created.resource_version());
    assert!(api.get_opt("missing").await.unwrap().is_none());
    let err = api.get("missing").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"), "{err:?}");

    api.create(&PostParams::default(), &config_map("b", &[])).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(list.metadata.resource_version, Some(server.resource_version().to_string()));
    let all: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 2);

    let mut changed = got.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = api.replace("a", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(replaced.data.unwrap()["k"], "w");
    assert_eq!(replaced.metadata.generation, Some(2));
    let err = api.replace("a", &PostParams::default(), &changed).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "stale: {err:?}");

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
    assert!(server.get(&Res::of::<ConfigMap>(), "default", "a").is_none());
    assert_eq!(server.list(&Res::of::<ConfigMap>(), None).len(), 1);
}

#[tokio::test]
async fn merge_and_apply_patches_and_the_status_subresource() {
    let server = ApiServer::start().await;
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    let mut r = route("r", "a.example");
    r.status = Some(GrpcRouteStatus { observed_generation: Some(9), ..Default::default() });
    let created = api.create(&PostParams::default(), &r).await.unwrap();
    assert!(created.status.is_none(), "create ignores status");

    let pp = PatchParams::default();
    let merged = api.patch("r", &pp, &Patch::Merge(json!({"spec": {"hostnames": ["b.example"]}}))).await.unwrap();
    assert_eq!(merged.spec.hostnames, ["b.example"]);
    assert_eq!(merged.metadata.generation, Some(2));
    let labelled = api.patch("r", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}}))).await.unwrap();
    assert_eq!(labelled.metadata.generation, Some(2), "metadata changes keep the generation");

    let status = json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute",
        "status": {"observedGeneration": 2, "conditions": [{
            "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 2,
        }]},
    });
    let pp = PatchParams::apply("switchboard-controller").force();
    let patched = api.patch_status("r", &pp, &Patch::Apply(&status)).await.unwrap();
    let conditions: &Vec<Condition> = &patched.status.as_ref().unwrap().conditions;
    assert_eq!(conditions[0].type_, "Accepted");
    assert_eq!(patched.metadata.generation, Some(2), "status writes keep the generation");
    assert_eq!(patched.spec.hostnames, ["b.example"]);
    let managers = patched.metadata.managed_fields.unwrap();
    assert!(managers.iter().any(|m| m.manager.as_deref() == Some("switchboard-controller")
        && m.operation.as_deref() == Some("Apply")
        && m.subresource.as_deref() == Some("status")));

    let rv = server.resource_version();
    api.patch_status("r", &pp, &Patch::Apply(&status)).await.unwrap();
    assert_eq!(server.resource_version(), rv, "an apply that changes nothing writes nothing");

    let spec_via_status = json!({"spec": {"hostnames": ["ignored.example"]}, "status": {"observedGeneration": 3}});
    let p = api.patch_status("r", &PatchParams::default(), &Patch::Merge(&spec_via_status)).await.unwrap();
    assert_eq!(
        (p.spec.hostnames.as_slice(), p.status.unwrap().observed_generation),
        (&["b.example".to_string()][..], Some(3))
    );
    let status_via_main = json!({"status": {"observedGeneration": 7}});
    let p = api.patch("r", &PatchParams::default(), &Patch::Merge(&status_via_main)).await.unwrap();
    assert_eq!(p.status.unwrap().observed_generation, Some(3), "the main resource does not write status");

    let applied = api.patch("new", &PatchParams::apply("tests"), &Patch::Apply(route("new", "n.example"))).await;
    assert_eq!(applied.unwrap().spec.hostnames, ["n.example"], "apply creates");
    let missing = api.patch_status("absent", &pp, &Patch::Apply(&status)).await.unwrap_err();
    assert!(matches!(&missing, kube::Error::Api(s) if s.code == 404), "{missing:?}");

    let status_applies = server.count(|r| {
        r.verb == Verb::Patch
            && r.subresource.as_deref() == Some("status")
            && r.field_manager.as_deref() == Some("switchboard-controller")
            && r.content_type.as_deref() == Some("application/apply-patch+yaml")
    });
    assert_eq!(status_applies, 3);
}

#[tokio::test]
async fn reflector_sees_added_modified_deleted() {
    let server = ApiServer::start().await;
    server.apply(route_json("before", "0.example"));
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    let seen = Reflected::start(api.clone(), watcher::Config::default());
    eventually("the initial list", || seen.names() == ["before"]).await;

    api.create(&PostParams::default(), &route("r", "a.example")).await.unwrap();
    eventually("ADDED", || seen.names() == ["before", "r"]).await;
    server.apply(route_json("r", "b.example"));
    eventually("MODIFIED", || hostname(&seen.store, "r").as_deref() == Some("b.example")).await;
    api.delete("before", &DeleteParams::default()).await.unwrap();
    eventually("DELETED", || seen.names() == ["r"]).await;

    let lists = server.count(|r| r.verb == Verb::List);
    let watches = server.count(|r| r.verb == Verb::Watch);
    assert_eq!((lists, watches), (1, 1), "one paged LIST then one WATCH");
    let watch = server.requests().into_iter().find(|r| r.verb == Verb::Watch).unwrap();
    assert!(
        watch.query.contains("allowWatchBookmarks=true") && watch.query.contains("timeoutSeconds=290"),
        "{watch:?}"
    );
    assert!(seen.errors().is_empty(), "{:?}", seen.errors());
}

#[tokio::test]
async fn watcher_resumes_after_dropped_watches_without_relisting() {
    let server = ApiServer::start().await;
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    let seen = Reflected::start(api.clone(), watcher::Config::default());
    eventually("a watch is open", || server.open_watches() == 1).await;

    for i in 0..3 {
        server.drop_watches();
        eventually("the watch was dropped", || server.count(|r| r.verb == Verb::Watch) > i + 1).await;
        api.create(&PostParams::default(), &route(&format!("r{i}"), "a.example")).await.unwrap();
    }
    eventually("changes after the drops", || seen.names() == ["r0", "r1", "r2"]).await;
    assert_eq!(server.count(|r| r.verb == Verb::List), 1, "resumed from its resourceVersion");
    assert!(seen.errors().is_empty(), "{:?}", seen.errors());
}

#[tokio::test]
async fn watcher_relists_after_history_reset() {
    let server = ApiServer::start().await;
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    server.apply(route_json("stays", "a.example"));
    server.apply(route_json("goes", "a.example"));
    let seen = Reflected::start(api.clone(), watcher::Config::default());
    eventually("the initial list", || seen.names() == ["goes", "stays"]).await;
    eventually("a watch is open", || server.open_watches() == 1).await;

    server.reset_history();
    server.delete(&Res::of::<GrpcRoute>(), "default", "goes");
    server.apply(route_json("stays", "b.example"));
    server.apply(route_json("new", "c.example"));

    eventually("converged after the relist", || {
        seen.names() == ["new", "stays"] && hostname(&seen.store, "stays").as_deref() == Some("b.example")
    })
    .await;
    assert_eq!(server.count(|r| r.verb == Verb::List), 2, "relisted once");
    assert!(seen.errors().iter().any(|e| e.contains("Expired")), "{:?}", seen.errors());
    api.create(&PostParams::default(), &route("later", "d.example")).await.unwrap();
    eventually("watching again", || seen.names() == ["later", "new", "stays"]).await;
}

#[tokio::test]
async fn watcher_recovers_from_server_errors() {
    let server = ApiServer::start().await;
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    let seen = Reflected::start(api.clone(), watcher::Config::default());
    eventually("a watch is open", || server.open_watches() == 1).await;

    server.fail_next(3, 500);
    server.drop_watches();
    eventually_slow("watching again after three failures", || {
        server.count(|r| r.code == 500) == 3 && server.open_watches() == 1
    })
    .await;
    server.apply(route_json("after", "a.example"));
    eventually("the change after recovering", || seen.names() == ["after"]).await;
    assert_eq!(seen.errors().len(), 3, "{:?}", seen.errors());
    assert!(seen.errors().iter().all(|e| e.contains("injected failure")), "{:?}", seen.errors());

    // Failing the initial LIST too: a fresh watcher gets there in the end.
    server.fail_next(2, 503);
    let fresh = Reflected::start(api, watcher::Config::default());
    eventually_slow("the fresh watcher listed", || fresh.names() == ["after"]).await;
}

#[tokio::test]
async fn watch_from_a_version_before_the_history_is_expired() {
    let server = ApiServer::start_with(Settings { history: 2, ..Default::default() }).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let start = server.resource_version();
    for i in 0..4 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}"), &[])).await.unwrap();
    }
    let mut stream = Box::pin(api.watch(&WatchParams::default(), &start.to_string()).await.unwrap());
    match stream.next().await {
        Some(Ok(WatchEvent::Error(s))) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ends after the error");

    // Inside the window, the watch replays what came after.
    let recent = (server.resource_version() - 1).to_string();
    let mut stream = Box::pin(api.watch(&WatchParams::default(), &recent).await.unwrap());
    match stream.next().await {
        Some(Ok(WatchEvent::Added(c))) => assert_eq!(c.name_any(), "c3"),
        other => panic!("expected ADDED c3, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_arrive_and_timeout_ends_the_watch() {
    let server =
        ApiServer::start_with(Settings { bookmark_every: Duration::from_millis(50), ..Default::default() }).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let rv = server.resource_version().to_string();
    let mut stream = Box::pin(api.watch(&WatchParams::default().timeout(1), &rv).await.unwrap());
    match stream.next().await {
        Some(Ok(WatchEvent::Bookmark(b))) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
    let rest = tokio::time::timeout(Duration::from_secs(5), async { while stream.next().await.is_some() {} }).await;
    assert!(rest.is_ok(), "timeoutSeconds ends the stream");
}

#[tokio::test]
async fn paged_list_and_streaming_list_watchers() {
    let server = ApiServer::start().await;
    for i in 0..5 {
        server.apply(route_json(&format!("r{i}"), "a.example"));
    }
    let api: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
    let paged = Reflected::start(api.clone(), watcher::Config::default().page_size(2));
    eventually("all pages", || paged.names().len() == 5).await;
    let lists: Vec<_> = server.requests().into_iter().filter(|r| r.verb == Verb::List).collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|r| r.query.contains("limit=2")) && lists[1].query.contains("continue="), "{lists:?}");

    let streamed = Reflected::start(api.clone(), watcher::Config::default().streaming_lists());
    eventually("the initial events", || streamed.names().len() == 5).await;
    api.delete("r0", &DeleteParams::default()).await.unwrap();
    eventually("a change after the initial events", || streamed.names().len() == 4).await;
    assert_eq!(server.count(|r| r.verb == Verb::List), 3, "streaming lists do not LIST");
}

#[tokio::test]
async fn label_and_field_selectors_filter() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for (name, labels) in [("a", &[("app", "x"), ("tier", "web")][..]), ("b", &[("app", "x")]), ("c", &[("app", "y")])]
    {
        api.create(&PostParams::default(), &config_map(name, labels)).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    let cases = [("app=x", &["a", "b"][..]), ("app=x,tier!=web", &["b"]), ("tier", &["a"]), ("!tier", &["b", "c"])];
    for (selector, want) in cases {
        assert_eq!(names(api.list(&ListParams::default().labels(selector)).await.unwrap()), want, "{selector}");
    }
    let by_name = api.list(&ListParams::default().fields("metadata.name=c")).await.unwrap();
    assert_eq!(names(by_name), ["c"]);
    let bad = api.list(&ListParams::default().labels("a b c")).await.unwrap_err();
    assert!(matches!(&bad, kube::Error::Api(s) if s.code == 400), "{bad:?}");

    let seen = Reflected::start(api.clone(), watcher::Config::default().labels("app=x"));
    eventually("selected", || seen.names() == ["a", "b"]).await;
    api.patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})))
        .await
        .unwrap();
    eventually("relabelled into the selector", || seen.names() == ["a", "b", "c"]).await;
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})))
        .await
        .unwrap();
    eventually("relabelled out of the selector", || seen.names() == ["b", "c"]).await;
}

#[test]
fn selector_parsing() {
    let obj = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "1", "b": "2"}}});
    for (selector, want) in [
        ("", true),
        ("a=1", true),
        ("a==1,b=2", true),
        ("a!=1", false),
        ("c!=1", true),
        ("a in (1, 3)", true),
        ("a notin (1,3),b", false),
        ("b,!c", true),
    ] {
        assert_eq!(LabelSelector::parse(selector).unwrap().matches(&obj), want, "{selector}");
    }
    assert!(LabelSelector::parse("a in 1").is_err());
    assert!(FieldSelector::parse("metadata.namespace=ns,metadata.name!=m").unwrap().matches(&obj));
    assert!(FieldSelector::parse("spec.x=1").is_err());
}

#[tokio::test]
async fn lease_conflicts_and_leader_election() {
    let server = ApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let lease = |holder: &str| Lease {
        metadata: ObjectMeta { name: Some("manual".into()), ..Default::default() },
        spec: Some(LeaseSpec { holder_identity: Some(holder.into()), ..Default::default() }),
    };
    let first = leases.create(&PostParams::default(), &lease("a")).await.unwrap();
    let err = leases.create(&PostParams::default(), &lease("b")).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{err:?}");
    let mut update = lease("b");
    update.metadata.resource_version = first.metadata.resource_version.clone();
    leases.replace("manual", &PostParams::default(), &update).await.unwrap();
    let err = leases.replace("manual", &PostParams::default(), &update).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{err:?}");

    // The controller's own election: two replicas, one leader; when it stops, the other takes over.
    let replica = |identity: &str| {
        let config = LeaseConfig {
            duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(700),
            renew_every: Duration::from_millis(100),
            ..LeaseConfig::new("default", "switchboard", identity)
        };
        elect(&server, config)
    };
    let (a_task, a, a_stop) = replica("a");
    let (b_task, b, b_stop) = replica("b");
    eventually("one leader", || *a.borrow() ^ *b.borrow()).await;
    let ((leader_task, _), (follower_task, follower)) =
        if *a.borrow() { ((a_task, a_stop), (b_task, b)) } else { ((b_task, b_stop), (a_task, a)) };
    // Killed without a word: the follower takes over once the record stopped changing for its duration.
    leader_task.abort();
    eventually("the other replica takes over", || *follower.borrow()).await;
    let spec = server.get_as::<Lease>("default", "switchboard").unwrap().spec.unwrap();
    assert!(spec.lease_transitions.unwrap_or(0) >= 1, "a takeover is a transition: {spec:?}");
    drop(follower_task);
}

/// client-go's release on shutdown: the leader empties the holder, so a successor takes over at once instead
/// of after the lease duration.
#[tokio::test]
async fn a_leader_that_shuts_down_releases_the_lease() {
    let server = ApiServer::start().await;
    let config = LeaseConfig {
        duration: Duration::from_secs(3600),
        renew_deadline: Duration::from_secs(10),
        renew_every: Duration::from_millis(100),
        ..LeaseConfig::new("default", "switchboard", "a")
    };
    let (task, rx, trigger) = elect(&server, config.clone());
    leading_is(&rx, true, Duration::from_secs(10)).await;
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("returns on shutdown").unwrap();
    assert!(!*rx.borrow(), "not leading after release");
    let spec = server.get_as::<Lease>("default", "switchboard").unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(""), "released");
    assert_eq!(spec.lease_duration_seconds, Some(1));

    // With an hour-long lease released, another replica leads within a few retry periods.
    let (_b, b, _b_stop) = elect(&server, LeaseConfig { identity: "b".into(), ..config });
    leading_is(&b, true, Duration::from_secs(2)).await;
}

/// One replica's leader election against `server`: its task, whether it leads, and its shutdown trigger.
fn elect(
    server: &ApiServer,
    config: LeaseConfig,
) -> (tokio::task::JoinHandle<()>, tokio::sync::watch::Receiver<bool>, ShutdownTrigger) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (trigger, shutdown) = shutdown_signal();
    let task = tokio::spawn(leader::run(server.client(), config, tx, Metrics::new(), shutdown));
    (task, rx, trigger)
}

/// Waits until the replica's leadership is `leading`; fails after `within`.
async fn leading_is(rx: &tokio::sync::watch::Receiver<bool>, leading: bool, within: Duration) {
    let mut rx = rx.clone();
    tokio::time::timeout(within, rx.wait_for(|l| *l == leading))
        .await
        .unwrap_or_else(|_| panic!("leadership did not become {leading} within {within:?}"))
        .unwrap();
}

/// A lease call that never answers must not keep a stale leader: the call has a deadline, and a leader that
/// cannot renew within the renew deadline steps down.
#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down() {
    let server = ApiServer::start().await;
    let config = LeaseConfig {
        duration: Duration::from_secs(8),
        renew_deadline: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
        ..LeaseConfig::new("default", "switchboard", "a")
    };
    let (_task, rx, _trigger) = elect(&server, config);
    leading_is(&rx, true, Duration::from_secs(10)).await;
    server.hang_requests(true);
    let started = std::time::Instant::now();
    leading_is(&rx, false, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(8), "before the lease could pass to another replica");
    server.hang_requests(false);
}

#[tokio::test]
async fn services_and_events_use_the_same_store() {
    let server = ApiServer::start().await;
    let services: Api<Service> = Api::namespaced(server.client(), "default");
    server.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"ports": [{"port": 50051}]}}));
    assert_eq!(services.get("echo").await.unwrap().spec.unwrap().ports.unwrap()[0].port, 50051);

    let recorder = kube::runtime::events::Recorder::new(
        server.client(),
        kube::runtime::events::Reporter { controller: "switchboard".into(), instance: None },
    );
    let reference = services.get("echo").await.unwrap().object_ref(&());
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: None,
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events = Res::new("events.k8s.io", "v1", "events");
    assert_eq!(server.list(&events, Some("default")).len(), 1);
    assert_eq!(server.count(|r| r.res.as_ref() == Some(&events) && r.verb == Verb::Create), 1);
    assert_eq!(server.count(|r| r.res.as_ref() == Some(&events) && r.verb == Verb::Patch), 1, "the series update");
}

/// What a real API server refuses: unknown fields (strict field validation), values outside the CRD's
/// schema, unknown fields in built-in kinds; and what it does for CRDs that are not installed and for RBAC
/// denials.
#[tokio::test]
async fn strict_validation_discovery_and_rbac_denials() {
    let server = ApiServer::start().await;
    let ar = kube::api::ApiResource::erase::<GrpcRoute>(&());
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let route = |spec: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute",
            "metadata": {"name": "r"}, "spec": spec}))
        .unwrap()
    };
    let pp = PostParams::default();
    let err = routes.create(&pp, &route(json!({"rules": [], "bogus": 1}))).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("unknown field \"spec.bogus\"")),
        "{err:?}"
    );
    let long = "a".repeat(300);
    let err = routes.create(&pp, &route(json!({"hostnames": [long]}))).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.hostnames[0]")), "{err:?}");
    routes.create(&pp, &route(json!({"rules": []}))).await.unwrap();
    let status = json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute", "status": {"ruleCount": 0, "extra": true}});
    let err = routes.patch_status("r", &PatchParams::apply("test").force(), &Patch::Apply(&status)).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("status.extra")), "{err:?}");

    let leases: Api<kube::api::DynamicObject> =
        Api::namespaced_with(server.client(), "default", &kube::api::ApiResource::erase::<Lease>(&()));
    let lease: kube::api::DynamicObject = serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "holder": "typo"}}))
    .unwrap();
    let err = leases.create(&pp, &lease).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("spec.holder")), "{err:?}");

    // A CRD that is not installed: 404 on its paths, absent from discovery; back once installed.
    let grants = Res::new("gateway.networking.k8s.io", "v1beta1", "referencegrants");
    let client = server.client();
    assert!(client.list_api_group_resources("gateway.networking.k8s.io/v1beta1").await.is_ok());
    server.uninstall(&grants);
    let err = client.list_api_group_resources("gateway.networking.k8s.io/v1beta1").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    let api: Api<ConfigMap> = Api::all(client.clone());
    assert!(api.list(&ListParams::default()).await.is_ok(), "other resources still served");
    let raw = client
        .request_text(
            http::Request::get("/apis/gateway.networking.k8s.io/v1beta1/referencegrants").body(vec![]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(&raw, kube::Error::Api(s) if s.code == 404), "{raw:?}");
    server.install(&grants);

    // Role-only RBAC: cluster-wide denied, the namespace allowed.
    server.forbid(&Res::of::<ConfigMap>(), None);
    let err = Api::<ConfigMap>::all(client.clone()).list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403 && s.reason == "Forbidden"), "{err:?}");
    assert!(Api::<ConfigMap>::namespaced(client, "default").list(&ListParams::default()).await.is_ok());
}
