//! The in-process controller: watches GrpcRoutes, Services, EndpointSlices and ReferenceGrants, builds a new
//! table on every change (coalescing bursts) and swaps it into the data plane; the leader writes status.

pub mod index;
pub mod leader;
pub mod reference_grant;
pub mod status;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};

use self::index::{RouteOutcome, Snapshot};
use self::leader::LeaseConfig;
use self::reference_grant::ReferenceGrant;
use crate::admin::Readiness;
use crate::crd::{GrpcRoute, GrpcRouteStatus};
use crate::metrics::Metrics;
use crate::proxy::Routes;

/// What the controller watches and how it writes.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Only GrpcRoutes with these labels (so several installations can share a cluster).
    pub label_selector: Option<String>,
    /// Field manager for server-side apply of status.
    pub field_manager: String,
    /// Leader election; `None` makes this replica always the leader.
    pub lease: Option<LeaseConfig>,
    /// How long to wait after a change for more changes before rebuilding.
    pub debounce: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            label_selector: None,
            field_manager: "switchboard".into(),
            lease: None,
            debounce: Duration::from_millis(100),
        }
    }
}

/// Reflector stores, one per watched scope.
struct Stores {
    routes: Vec<Store<DynamicObject>>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    grants: Option<Vec<Store<ReferenceGrant>>>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            routes: self.routes.iter().flat_map(Store::state).collect(),
            services: self.services.iter().flat_map(Store::state).collect(),
            slices: self.slices.iter().flat_map(Store::state).collect(),
            grants: self.grants.as_ref().map(|g| g.iter().flat_map(Store::state).collect()),
        }
    }

    async fn wait_until_ready(&self) {
        for s in &self.routes {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.services {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.slices {
            let _ = s.wait_until_ready().await;
        }
        for s in self.grants.iter().flatten() {
            let _ = s.wait_until_ready().await;
        }
    }
}

/// Runs the controller until the process ends. Readiness is set after the first full sync.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    routes: Arc<Routes>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
) {
    let changed = Arc::new(Notify::new());
    let grants_installed = grants_installed(&client).await;
    if !grants_installed {
        tracing::info!("ReferenceGrant CRD not installed: cross-namespace backendRefs will be refused");
    }
    let stores = start_watches(&client, &config, grants_installed, &changed, &metrics);

    let (leader_tx, mut leader_rx) = watch::channel(config.lease.is_none());
    if let Some(lease) = config.lease.clone() {
        tokio::spawn(leader::run(client.clone(), lease, leader_tx));
    }
    let reporter = Reporter {
        controller: config.field_manager.clone(),
        instance: config.lease.as_ref().map(|l| l.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);

    stores.wait_until_ready().await;
    let mut synced = false;
    loop {
        let started = std::time::Instant::now();
        let snapshot = stores.snapshot();
        let (table, outcomes) = index::build(&snapshot);
        let rules = table.rules().len();
        routes.swap(table);
        metrics.reconciles.inc();
        metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        let rejected = outcomes.iter().filter(|o| o.report.as_ref().map_or(true, |r| r.accepted.is_err())).count();
        metrics.routes.with_label_values(&["accepted"]).set((outcomes.len() - rejected) as i64);
        metrics.routes.with_label_values(&["rejected"]).set(rejected as i64);
        if !synced {
            synced = true;
            readiness.set_synced();
            tracing::info!(routes = outcomes.len(), rules, "first route sync done");
        }
        let leading = *leader_rx.borrow_and_update();
        metrics.leader.set(i64::from(leading));
        if leading {
            write_statuses(&client, &config, &recorder, &snapshot, &outcomes, &metrics).await;
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = leader_rx.changed() => {}
        }
        // Coalesce a burst of changes into one rebuild.
        tokio::time::sleep(config.debounce).await;
    }
}

/// A one-off snapshot of the cluster (for `switchboard explain`): every GrpcRoute, Service, EndpointSlice and
/// ReferenceGrant, listed once.
pub async fn snapshot(client: &Client) -> Result<Snapshot, kube::Error> {
    let lp = ListParams::default();
    let ar = ApiResource::erase::<GrpcRoute>(&());
    let routes = Api::<DynamicObject>::all_with(client.clone(), &ar).list(&lp).await?;
    let services = Api::<Service>::all(client.clone()).list(&lp).await?;
    let slices = Api::<EndpointSlice>::all(client.clone()).list(&lp).await?;
    let grants = match Api::<ReferenceGrant>::all(client.clone()).list(&lp).await {
        Ok(g) => Some(g.items.into_iter().map(Arc::new).collect()),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    Ok(Snapshot {
        routes: routes.items.into_iter().map(Arc::new).collect(),
        services: services.items.into_iter().map(Arc::new).collect(),
        slices: slices.items.into_iter().map(Arc::new).collect(),
        grants,
    })
}

async fn grants_installed(client: &Client) -> bool {
    let api: Api<ReferenceGrant> = Api::all(client.clone());
    !matches!(api.list(&ListParams::default().limit(1)).await, Err(kube::Error::Api(e)) if e.code == 404)
}

fn start_watches(
    client: &Client,
    config: &ControllerConfig,
    grants: bool,
    changed: &Arc<Notify>,
    metrics: &Metrics,
) -> Stores {
    let scopes: Vec<Option<&str>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let route_ar = ApiResource::erase::<GrpcRoute>(&());
    let mut route_cfg = watcher::Config::default();
    if let Some(sel) = &config.label_selector {
        route_cfg = route_cfg.labels(sel);
    }
    let mut stores = Stores { routes: vec![], services: vec![], slices: vec![], grants: grants.then(Vec::new) };
    for scope in scopes {
        let api = match scope {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &route_ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &route_ar),
        };
        let writer = reflector::store::Writer::new(route_ar.clone());
        stores.routes.push(writer.as_reader());
        let stream = watcher(api, route_cfg.clone()).default_backoff().reflect(writer);
        tokio::spawn(drive(stream, changed.clone(), "grpcroutes", metrics.clone()));
        stores.services.push(watch_typed::<Service>(client, scope, changed, "services", metrics));
        stores.slices.push(watch_typed::<EndpointSlice>(client, scope, changed, "endpointslices", metrics));
        if let Some(g) = stores.grants.as_mut() {
            g.push(watch_typed::<ReferenceGrant>(client, scope, changed, "referencegrants", metrics));
        }
    }
    stores
}

fn watch_typed<K>(
    client: &Client,
    scope: Option<&str>,
    changed: &Arc<Notify>,
    kind: &'static str,
    metrics: &Metrics,
) -> Store<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let api = match scope {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    tokio::spawn(drive(stream, changed.clone(), kind, metrics.clone()));
    reader
}

async fn drive<K, S>(stream: S, changed: Arc<Notify>, kind: &'static str, metrics: Metrics)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let (events, errors) =
        (metrics.watch_events.with_label_values(&[kind]), metrics.watch_errors.with_label_values(&[kind]));
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                events.inc();
                changed.notify_one();
            }
            // The stream retries with backoff (and relists on 410 Gone) by itself.
            Err(e) => {
                errors.inc();
                tracing::warn!(kind, error = %e, "watch failed; retrying");
            }
        }
    }
}

/// Writes each route's status when it differs from what is stored, and an Event when a route is rejected.
async fn write_statuses(
    client: &Client,
    config: &ControllerConfig,
    recorder: &Recorder,
    snapshot: &Snapshot,
    outcomes: &[RouteOutcome],
    metrics: &Metrics,
) {
    let ar = ApiResource::erase::<GrpcRoute>(&());
    let now = k8s_openapi::jiff::Timestamp::now();
    // Stored times have second precision; computing with the same keeps unchanged statuses identical.
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    for outcome in outcomes {
        let Some(obj) = snapshot.routes.iter().find(|o| {
            o.metadata.name.as_deref() == Some(outcome.id.name.as_str())
                && o.metadata.namespace.as_deref() == Some(outcome.id.namespace.as_str())
        }) else {
            continue;
        };
        let previous: Option<GrpcRouteStatus> =
            obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
        let next = status::compute(outcome, previous.as_ref(), &now);
        if previous.as_ref() == Some(&next) {
            continue;
        }
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &outcome.id.namespace, &ar);
        let patch =
            serde_json::json!({ "apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute", "status": next });
        let params = PatchParams::apply(&config.field_manager).force();
        match api.patch_status(&outcome.id.name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                metrics.status_writes.with_label_values(&["ok"]).inc();
                tracing::debug!(route = %outcome.id, "status written");
            }
            Err(e) => {
                metrics.status_writes.with_label_values(&["error"]).inc();
                tracing::warn!(route = %outcome.id, error = %e, "status write failed");
            }
        }
        let was_accepted = previous.as_ref().is_none_or(status::is_accepted);
        if !status::is_accepted(&next) && was_accepted {
            let message = next.conditions.first().map(|c| c.message.clone()).unwrap_or_default();
            tracing::error!(route = %outcome.id, error = %message, "route rejected");
            let event = Event {
                type_: EventType::Warning,
                reason: "RouteRejected".into(),
                note: Some(message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &obj.object_ref(&ar)).await {
                tracing::warn!(route = %outcome.id, error = %e, "event not recorded");
            }
        }
    }
}
