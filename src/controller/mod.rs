//! The in-process controller: watches GrpcRoutes, Services and EndpointSlices (and ReferenceGrants when that
//! API is there), builds a new table on every change (coalescing bursts) and swaps it into the data plane. A
//! separate task writes status and Events, only on the leader.

pub mod backend_tls;
pub mod index;
pub mod leader;
pub mod policy_status;
pub mod reference_grant;
mod slim;
pub mod status;
pub mod writer;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch, Notify};

use self::index::Snapshot;
use self::leader::LeaseConfig;
use self::reference_grant::ReferenceGrant;
use crate::admin::Readiness;
use crate::crd::GrpcRoute;
use crate::metrics::Metrics;
use crate::proxy::{Policies, Routes, Shutdown};
use crate::tls::{BackendTLSPolicy, Pem};

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
    /// How often the status writer checks every route again, changed or not.
    pub status_resync: Duration,
    /// How often an optional API (ReferenceGrant, BackendTLSPolicy) that is missing or forbidden is looked
    /// for again.
    pub optional_recheck: Duration,
    /// Certificate chain and key (PEM files) presented to backends reached over TLS by a BackendTLSPolicy.
    pub backend_client_cert: Option<(PathBuf, PathBuf)>,
    /// How often `backend_client_cert` is checked for changes.
    pub file_recheck: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            label_selector: None,
            field_manager: "switchboard".into(),
            lease: None,
            debounce: Duration::from_millis(100),
            status_resync: Duration::from_secs(300),
            optional_recheck: Duration::from_secs(60),
            backend_client_cert: None,
            file_recheck: Duration::from_secs(1),
        }
    }
}

/// Reflector stores, one per watched scope.
struct Stores {
    routes: Vec<Store<DynamicObject>>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    /// Filled in once the ReferenceGrant API is found and readable; `None` until then.
    grants: Arc<Mutex<Option<Vec<Store<ReferenceGrant>>>>>,
    /// Filled in once the BackendTLSPolicy API is found, and it and ConfigMaps are readable.
    tls: TlsSlot,
    /// The client certificate and key for backends, as last read.
    client_cert: Arc<Mutex<Option<(Pem, Pem)>>>,
}

/// The BackendTLSPolicy and ConfigMap stores, once their watches started.
pub type TlsSlot = Arc<Mutex<Option<TlsStores>>>;

/// BackendTLSPolicy and ConfigMap stores, one of each per watched scope.
#[derive(Clone)]
pub struct TlsStores {
    /// BackendTLSPolicies.
    pub policies: Vec<Store<BackendTLSPolicy>>,
    /// ConfigMaps (only their `ca.crt`).
    pub config_maps: Vec<Store<ConfigMap>>,
    /// Why ConfigMaps are not watched, when they cannot be listed.
    pub config_maps_unreadable: Option<String>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            routes: self.routes.iter().flat_map(Store::state).collect(),
            services: self.services.iter().flat_map(Store::state).collect(),
            slices: self.slices.iter().flat_map(Store::state).collect(),
            grants: grants.as_ref().map(|g| g.iter().flat_map(Store::state).collect()),
            tls_policies: tls.iter().flat_map(|t| &t.policies).flat_map(Store::state).collect(),
            config_maps: tls.iter().flat_map(|t| &t.config_maps).flat_map(Store::state).collect(),
            config_maps_unreadable: tls.as_ref().and_then(|t| t.config_maps_unreadable.clone()),
            system_ca: crate::tls::system_ca(),
            backend_client_cert: self.client_cert.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Waits for the first list of every required watch (the optional APIs report on their own).
    async fn wait_until_ready(&self) {
        synced(&self.routes).await;
        synced(&self.services).await;
        synced(&self.slices).await;
    }
}

/// Runs the controller until shutdown. Readiness is set after the first full sync. On shutdown the leader
/// releases its lease before this returns.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    routes: Arc<Routes>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let changed = Arc::new(Notify::new());
    let route_changed = Arc::new(Notify::new());
    let stores = start_watches(&client, &config, &changed, &route_changed, &metrics);
    let optional = |name, consequence, probe| Optional {
        client: client.clone(),
        scopes: scopes(&config),
        changed: changed.clone(),
        recheck: config.optional_recheck,
        name,
        consequence,
        probe,
    };
    // Each optional API reports once it is synced or found unavailable: the first table waits for both, so
    // a restart never serves a table without the policies (cleartext where TLS is asked for) or grants.
    let (grants_seen, grants_seen_rx) = oneshot::channel::<()>();
    let grants = optional(
        "ReferenceGrants",
        "cross-namespace backendRefs are refused",
        ApiResource::erase::<ReferenceGrant>(&()),
    );
    let (slot, m) = (stores.grants.clone(), metrics.clone());
    tokio::spawn(grants.run(grants_seen, move |client, scopes, changed| async move {
        let watched = watch_scopes(&client, &scopes, &changed, "referencegrants", &m, slim::grant);
        synced(&watched).await;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(watched);
    }));
    let (policies_seen, policies_seen_rx) = oneshot::channel::<()>();
    let policies = optional(
        "BackendTLSPolicies",
        "every Service is reached in cleartext",
        ApiResource::erase::<BackendTLSPolicy>(&()),
    );
    let (slot, m) = (stores.tls.clone(), metrics.clone());
    tokio::spawn(policies.run(policies_seen, move |client, scopes, changed| async move {
        let policies = watch_scopes(&client, &scopes, &changed, "backendtlspolicies", &m, slim::tls_policy);
        // ConfigMaps that cannot be read leave every policy's CA unresolved: calls fail rather than go out in
        // cleartext (granting access needs a restart to be seen).
        let (config_maps, config_maps_unreadable) =
            match listable(&client, &scopes, &ApiResource::erase::<ConfigMap>(&())).await {
                Ok(()) => (watch_scopes(&client, &scopes, &changed, "configmaps", &m, slim::config_map), None),
                Err(reason) => {
                    tracing::error!(%reason, "ConfigMaps cannot be read: BackendTLSPolicies' CA certificates are unresolved");
                    (Vec::new(), Some(reason))
                }
            };
        synced(&policies).await;
        synced(&config_maps).await;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(TlsStores { policies, config_maps, config_maps_unreadable });
    }));

    if let Some((cert, key)) = config.backend_client_cert.clone() {
        let files = ClientCertFiles { cert, key, slot: stores.client_cert.clone(), changed: changed.clone() };
        if let Err(e) = files.reload() {
            tracing::error!(error = %e, "backend TLS client certificate not loaded; backends that ask for one refuse");
        }
        tokio::spawn(files.watch(config.file_recheck));
    }

    let (leader_tx, leader_rx) = watch::channel(config.lease.is_none());
    metrics.leader.set(i64::from(config.lease.is_none()));
    // Without a lease this replica always leads: the sender stays here, so the writer never sees it close.
    let (leader_task, _always_leader) = match config.lease.clone() {
        Some(lease) => {
            let task = leader::run(client.clone(), lease, leader_tx, metrics.clone(), shutdown.clone());
            (Some(tokio::spawn(task)), None)
        }
        None => (None, Some(leader_tx)),
    };
    let reporter = reporter_for(&config);
    let (outcomes_tx, outcomes_rx) = watch::channel(Arc::new(Vec::new()));
    let writer = writer::Writer {
        client: client.clone(),
        field_manager: config.field_manager.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        routes: stores.routes.clone(),
        metrics: metrics.clone(),
        resync: config.status_resync,
    };
    tokio::spawn(writer.run(outcomes_rx, leader_rx.clone(), route_changed, shutdown.clone()));
    let (policy_outcomes_tx, policy_outcomes_rx) = watch::channel(Arc::new(Vec::new()));
    let policy_writer = policy_status::PolicyWriter {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter_for(&config)),
        stores: stores.tls.clone(),
        metrics: metrics.clone(),
        resync: config.status_resync,
    };
    tokio::spawn(policy_writer.run(policy_outcomes_rx, leader_rx, shutdown.clone()));

    let mut stop = std::pin::pin!(shutdown.into_wait());
    let optional_seen = async {
        let _ = grants_seen_rx.await;
        let _ = policies_seen_rx.await;
    };
    tokio::select! {
        _ = async { tokio::join!(stores.wait_until_ready(), optional_seen) } => {}
        _ = &mut stop => {
            if let Some(task) = leader_task {
                let _ = task.await;
            }
            return;
        }
    }
    let mut synced = false;
    let mut parsed = index::RouteCache::default();
    loop {
        let started = std::time::Instant::now();
        let snapshot = stores.snapshot();
        let index::Built { table, outcomes, backend_tls, policies: policy_outcomes } =
            index::build_full(&snapshot, &mut parsed);
        let rules = table.rules().len();
        let policies = Policies { identities: parsed.client_identities(), backend_tls };
        routes.swap_with(table, &policies);
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
        // The status writer wakes only when some route's outcome changed.
        outcomes_tx.send_if_modified(|current| {
            let modified = **current != outcomes;
            if modified {
                *current = Arc::new(outcomes);
            }
            modified
        });
        policy_outcomes_tx.send_if_modified(|current| {
            let modified = **current != policy_outcomes;
            if modified {
                *current = Arc::new(policy_outcomes);
            }
            modified
        });
        tokio::select! {
            _ = changed.notified() => {}
            _ = &mut stop => break,
        }
        // Coalesce a burst of changes into one rebuild.
        tokio::time::sleep(config.debounce).await;
    }
    if let Some(task) = leader_task {
        let _ = task.await;
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
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => None,
        Err(e) => return Err(e),
    };
    let (tls_policies, config_maps) = match Api::<BackendTLSPolicy>::all(client.clone()).list(&lp).await {
        Ok(p) if !p.items.is_empty() => {
            let cms = match Api::<ConfigMap>::all(client.clone()).list(&lp).await {
                Ok(cms) => cms.items.into_iter().map(Arc::new).collect(),
                Err(kube::Error::Api(e)) if e.code == 403 => Vec::new(),
                Err(e) => return Err(e),
            };
            (p.items.into_iter().map(Arc::new).collect(), cms)
        }
        Ok(_) => (Vec::new(), Vec::new()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => (Vec::new(), Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(Snapshot {
        routes: routes.items.into_iter().map(Arc::new).collect(),
        services: services.items.into_iter().map(Arc::new).collect(),
        slices: slices.items.into_iter().map(Arc::new).collect(),
        grants,
        tls_policies,
        config_maps,
        config_maps_unreadable: None,
        system_ca: crate::tls::system_ca(),
        backend_client_cert: None,
    })
}

fn scopes(config: &ControllerConfig) -> Vec<Option<String>> {
    if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    }
}

/// Starts every required watch. `changed` hears of every event; `route_changed` of GrpcRoute events only
/// (the status writer checks what is stored).
fn start_watches(
    client: &Client,
    config: &ControllerConfig,
    changed: &Arc<Notify>,
    route_changed: &Arc<Notify>,
    metrics: &Metrics,
) -> Stores {
    let route_ar = ApiResource::erase::<GrpcRoute>(&());
    let mut route_cfg = watcher::Config::default();
    if let Some(sel) = &config.label_selector {
        route_cfg = route_cfg.labels(sel);
    }
    let mut stores = Stores {
        routes: vec![],
        services: vec![],
        slices: vec![],
        grants: Default::default(),
        tls: Default::default(),
        client_cert: Default::default(),
    };
    for scope in scopes(config) {
        let scope = scope.as_deref();
        let api = match scope {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &route_ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &route_ar),
        };
        let writer = reflector::store::Writer::new(route_ar.clone());
        stores.routes.push(writer.as_reader());
        let stream = watcher(api, route_cfg.clone()).default_backoff().modify(slim::route).reflect(writer);
        let wake = vec![changed.clone(), route_changed.clone()];
        tokio::spawn(drive(stream, wake, "grpcroutes", metrics.clone()));
        stores.services.push(watch_typed(client, scope, changed, "services", metrics, slim::service));
        stores.slices.push(watch_typed(client, scope, changed, "endpointslices", metrics, slim::slice));
    }
    stores
}

/// An API a cluster may not have (the Gateway API CRDs are optional) or may not let us read (a namespaced
/// install with Role-only RBAC): ReferenceGrants, BackendTLSPolicies with the ConfigMaps they name.
struct Optional {
    client: Client,
    scopes: Vec<Option<String>>,
    changed: Arc<Notify>,
    recheck: Duration,
    /// For logs.
    name: &'static str,
    /// What it means while the API is unavailable, for logs.
    consequence: &'static str,
    /// The kind that must be served and listable.
    probe: ApiResource,
}

impl Optional {
    /// Looks for the API by discovery (which every client may read), then checks that each scope may be
    /// listed. Missing or forbidden, it is an empty set, looked for again every `recheck`; once found, `start`
    /// starts its watches and returns when they are synced. `seen` is dropped after the first look: when
    /// the API turned out unavailable, or its watches synced.
    async fn run<F, Fut>(self, seen: oneshot::Sender<()>, start: F)
    where
        F: FnOnce(Client, Vec<Option<String>>, Arc<Notify>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut seen = Some(seen);
        let mut last_reason = String::new();
        loop {
            match self.readable().await {
                Ok(()) => {
                    start(self.client.clone(), self.scopes.clone(), self.changed.clone()).await;
                    tracing::info!(api = self.name, "watched");
                    self.changed.notify_one();
                    return;
                }
                Err(reason) if reason != last_reason => {
                    tracing::info!(api = self.name, %reason, recheck = ?self.recheck, "unavailable: {}", self.consequence);
                    last_reason = reason;
                }
                Err(_) => {}
            }
            drop(seen.take());
            tokio::time::sleep(self.recheck).await;
        }
    }

    /// Whether the probed kind is served and listable in every scope; why not, otherwise.
    async fn readable(&self) -> Result<(), String> {
        let (gv, plural) = (&self.probe.api_version, &self.probe.plural);
        let resources = match self.client.list_api_group_resources(gv).await {
            Ok(r) => r,
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(format!("{gv} is not served (CRD not installed)")),
            Err(e) => return Err(format!("discovery of {gv} failed: {e}")),
        };
        if !resources.resources.iter().any(|r| &r.name == plural) {
            return Err(format!("{gv} does not serve {plural}"));
        }
        listable(&self.client, &self.scopes, &self.probe).await
    }
}

/// Whether `ar` may be listed in every scope; why not, otherwise.
async fn listable(client: &Client, scopes: &[Option<String>], ar: &ApiResource) -> Result<(), String> {
    for scope in scopes {
        let api: Api<DynamicObject> = match scope {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        };
        if let Err(e) = api.list_metadata(&ListParams::default().limit(1)).await {
            let at = scope.as_deref().map_or("cluster-wide".to_string(), |ns| format!("in namespace {ns}"));
            return Err(match e {
                kube::Error::Api(e) => format!("listing {} {at}: {} {}", ar.plural, e.code, e.reason),
                e => format!("listing {} {at}: {e}", ar.plural),
            });
        }
    }
    Ok(())
}

/// The client certificate presented to backends, re-read when its files change (a mounted Secret is
/// replaced by the kubelet); a pair that does not load keeps the previous one.
struct ClientCertFiles {
    cert: PathBuf,
    key: PathBuf,
    slot: Arc<Mutex<Option<(Pem, Pem)>>>,
    changed: Arc<Notify>,
}

impl ClientCertFiles {
    /// Loads the files into the slot if they changed; whether they did.
    fn reload(&self) -> Result<bool, String> {
        let pair = crate::tls::load_client_cert(&self.cert, &self.key).map_err(|e| e.to_string())?;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref() == Some(&pair) {
            return Ok(false);
        }
        *slot = Some(pair);
        Ok(true)
    }

    async fn watch(self, every: Duration) {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "backend TLS client certificate reloaded");
                    self.changed.notify_one();
                    last_error.clear();
                }
                Ok(false) => last_error.clear(),
                Err(e) if e != last_error => {
                    tracing::error!(error = %e, "backend TLS client certificate not reloaded; the previous one stays");
                    last_error = e;
                }
                Err(_) => {}
            }
        }
    }
}

fn reporter_for(config: &ControllerConfig) -> Reporter {
    Reporter { controller: config.field_manager.clone(), instance: config.lease.as_ref().map(|l| l.identity.clone()) }
}

/// Waits for the first list of each of `stores`.
async fn synced<K: Resource + Clone>(stores: &[Store<K>])
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    for s in stores {
        let _ = s.wait_until_ready().await;
    }
}

/// [`watch_typed`] in each of `scopes`.
fn watch_scopes<K>(
    client: &Client,
    scopes: &[Option<String>],
    changed: &Arc<Notify>,
    kind: &'static str,
    metrics: &Metrics,
    slim: fn(&mut K),
) -> Vec<Store<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    scopes.iter().map(|s| watch_typed(client, s.as_deref(), changed, kind, metrics, slim)).collect()
}

fn watch_typed<K>(
    client: &Client,
    scope: Option<&str>,
    changed: &Arc<Notify>,
    kind: &'static str,
    metrics: &Metrics,
    slim: fn(&mut K),
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
    let stream = watcher(api, watcher::Config::default()).default_backoff().modify(slim).reflect(writer);
    tokio::spawn(drive(stream, vec![changed.clone()], kind, metrics.clone()));
    reader
}

async fn drive<K, S>(stream: S, wake: Vec<Arc<Notify>>, kind: &'static str, metrics: Metrics)
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
                wake.iter().for_each(|w| w.notify_one());
            }
            // The stream retries with backoff (and relists on 410 Gone) by itself.
            Err(e) => {
                errors.inc();
                tracing::warn!(kind, error = %e, "watch failed; retrying");
            }
        }
    }
}
