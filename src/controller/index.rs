//! The pure step from cluster state to a route table: GrpcRoutes + Services + EndpointSlices (+ ReferenceGrants)
//! in, a table and one report per route out. No I/O; the controller calls it with reflector snapshots.

mod endpoints;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::ResourceExt;

use super::backend_tls::{self, PolicyOutcome, TlsCache, TlsIndex};
use super::reference_grant::ReferenceGrant;
use crate::crd::{BackendObjectRef, GrpcRoute};
use crate::proxy::RuleIdentities;
use crate::table::{
    self, Backend, EndpointAddr, Resolve, RouteId, RouteInput, RouteReport, Table, Unresolved, UnresolvedReason,
};
use crate::tls::{BackendTLSPolicy, BackendTls, Pem};

/// The label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A snapshot of what the controller watches.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// GrpcRoutes as stored (untyped, so one that does not deserialize cannot hide the others).
    pub routes: Vec<Arc<DynamicObject>>,
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// ReferenceGrants; `None` when their CRD is not installed (every cross-namespace reference is refused).
    pub grants: Option<Vec<Arc<ReferenceGrant>>>,
    /// BackendTLSPolicies (empty when their CRD is not installed: every Service is reached in cleartext).
    pub tls_policies: Vec<Arc<BackendTLSPolicy>>,
    /// ConfigMaps, reduced to their `ca.crt` (only watched while BackendTLSPolicies are).
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// Why ConfigMaps cannot be read, when they cannot (every CA reference is then unresolved).
    pub config_maps_unreadable: Option<String>,
    /// The platform's CA bundle, for policies with `wellKnownCACertificates: System`.
    pub system_ca: Option<Pem>,
    /// The certificate chain and key presented to backends that policies have reached over TLS.
    pub backend_client_cert: Option<(Pem, Pem)>,
}

/// Everything one build makes of a snapshot.
#[derive(Debug)]
pub struct Built {
    /// The table.
    pub table: Table<EndpointAddr>,
    /// One outcome per GrpcRoute, in precedence order.
    pub outcomes: Vec<RouteOutcome>,
    /// The endpoints reached over TLS.
    pub backend_tls: HashMap<EndpointAddr, Arc<BackendTls>>,
    /// One outcome per BackendTLSPolicy.
    pub policies: Vec<PolicyOutcome>,
}

/// What the build made of one GrpcRoute, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteOutcome {
    /// The route.
    pub id: RouteId,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The report, or why the object could not even be read as a GrpcRoute.
    pub report: Result<RouteReport, String>,
    /// Rules of the route in the table (0 unless accepted).
    pub rules: usize,
}

/// A GrpcRoute read into the typed form, or why it could not be.
type Read = Arc<Result<GrpcRoute, String>>;

/// A route as read: identity, generation, the typed route (or why not), creation time.
type Parsed = (RouteId, Option<i64>, Read, Option<String>);

/// GrpcRoutes already read into the typed form, by namespace/name and resourceVersion, and TLS configurations
/// already built, so that a rebuild (most are for endpoint changes) reads only what changed.
#[derive(Debug, Default)]
pub struct RouteCache(HashMap<(String, String), (String, Read)>, TlsCache);

impl RouteCache {
    /// The rules' allow-lists of client identities, of the routes the last build read (the data plane
    /// enforces them beside the table).
    pub fn client_identities(&self) -> RuleIdentities {
        let routes: Vec<(RouteId, &GrpcRoute)> = self
            .0
            .iter()
            .filter_map(|((namespace, name), (_, r))| {
                let id = RouteId { namespace: namespace.clone(), name: name.clone() };
                r.as_ref().as_ref().ok().map(|r| (id, r))
            })
            .collect();
        RuleIdentities::from_specs(routes.iter().map(|(id, r)| (id, &r.spec)))
    }
}

/// Builds the table from a snapshot. Routes are ordered oldest first, then by `namespace/name`.
pub fn build(snapshot: &Snapshot) -> (Table<EndpointAddr>, Vec<RouteOutcome>) {
    build_cached(snapshot, &mut RouteCache::default())
}

/// [`build`], reading only the routes that changed since the build that filled `cache`.
pub fn build_cached(snapshot: &Snapshot, cache: &mut RouteCache) -> (Table<EndpointAddr>, Vec<RouteOutcome>) {
    let built = build_full(snapshot, cache);
    (built.table, built.outcomes)
}

/// Everything [`build_cached`] makes, with the endpoints reached over TLS and the BackendTLSPolicies' outcomes.
pub fn build_full(snapshot: &Snapshot, cache: &mut RouteCache) -> Built {
    let mut next = HashMap::with_capacity(snapshot.routes.len());
    let mut parsed: Vec<Parsed> = snapshot
        .routes
        .iter()
        .map(|obj| {
            let id = RouteId { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() };
            let created = obj.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string());
            let key = (id.namespace.clone(), id.name.clone());
            let version = obj.metadata.resource_version.clone();
            let cached = cache.0.remove(&key).filter(|(v, _)| Some(v) == version.as_ref()).map(|(_, r)| r);
            let route = cached.unwrap_or_else(|| {
                Arc::new(
                    serde_json::to_value(obj.as_ref())
                        .and_then(serde_json::from_value::<GrpcRoute>)
                        .map_err(|e| format!("invalid GrpcRoute: {e}")),
                )
            });
            if let Some(v) = version {
                next.insert(key, (v, route.clone()));
            }
            (id, obj.metadata.generation, route, created)
        })
        .collect();
    cache.0 = next;
    // Oldest first; a missing timestamp sorts last. Ties by namespace/name.
    parsed.sort_by(|a, b| (a.3.is_none(), &a.3, &a.0).cmp(&(b.3.is_none(), &b.3, &b.0)));

    let platform = backend_tls::Platform {
        system_ca: snapshot.system_ca.as_ref(),
        client_cert: snapshot.backend_client_cert.as_ref(),
        config_maps_unreadable: snapshot.config_maps_unreadable.as_deref(),
    };
    let (tls, mut policies) =
        backend_tls::index(&snapshot.tls_policies, &snapshot.config_maps, &snapshot.services, &platform, &mut cache.1);
    let resolver = ClusterResolver::new(snapshot, &tls);
    let valid: Vec<(&RouteId, &GrpcRoute)> =
        parsed.iter().filter_map(|(id, _, r, _)| r.as_ref().as_ref().ok().map(|r| (id, r))).collect();
    let inputs: Vec<RouteInput<'_>> = valid.iter().map(|(id, r)| RouteInput { id, spec: &r.spec }).collect();
    let out = table::build(&inputs, &resolver);
    let mut reports: HashMap<RouteId, RouteReport> = out.reports.into_iter().map(|r| (r.id.clone(), r)).collect();
    let outcomes = parsed
        .into_iter()
        .map(|(id, generation, route, _)| {
            let (report, rules) = match route.as_ref() {
                Ok(r) => {
                    let report = reports.remove(&id).expect("one report per valid route");
                    let rules = if report.accepted.is_ok() { r.spec.rules.len() } else { 0 };
                    (Ok(report), rules)
                }
                Err(e) => (Err(e.clone()), 0),
            };
            RouteOutcome { id, generation, report, rules }
        })
        .collect();
    // Status goes only on policies for Services that GrpcRoutes send calls to: others are not switchboard's
    // business (another implementation may be the one that uses them).
    let referenced = resolver.referenced.into_inner();
    for p in &mut policies {
        p.targets.retain(|t| referenced.contains(&(p.namespace.clone(), t.service.clone())));
    }
    let backend_tls = resolver.bound.into_inner().into_iter().filter_map(|(a, t)| Some((a, t?))).collect();
    Built { table: out.table, outcomes, backend_tls, policies }
}

/// Resolves backendRefs to the ready endpoints of Services, noting which are reached over TLS.
struct ClusterResolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    grants: Option<HashMap<&'a str, Vec<&'a ReferenceGrant>>>,
    tls: &'a TlsIndex,
    /// How each endpoint is reached: over TLS with these settings, or (`None`) in cleartext. An address two
    /// Services reach differently is refused for the later one.
    bound: RefCell<HashMap<EndpointAddr, Option<Arc<BackendTls>>>>,
    /// Services some backendRef resolved to (or tried to), by (namespace, name).
    referenced: RefCell<std::collections::HashSet<(String, String)>>,
}

impl<'a> ClusterResolver<'a> {
    fn new(s: &'a Snapshot, tls: &'a TlsIndex) -> Self {
        let ns = |m: &'a kube::api::ObjectMeta| m.namespace.as_deref().unwrap_or("");
        let services = s
            .services
            .iter()
            .map(|svc| ((ns(&svc.metadata), svc.metadata.name.as_deref().unwrap_or("")), svc.as_ref()))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &s.slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                slices.entry((ns(&slice.metadata), svc.as_str())).or_default().push(slice.as_ref());
            }
        }
        let grants = s.grants.as_ref().map(|grants| {
            let mut by_ns: HashMap<_, Vec<_>> = HashMap::new();
            for g in grants {
                by_ns.entry(ns(&g.metadata)).or_default().push(g.as_ref());
            }
            by_ns
        });
        Self { services, slices, grants, tls, bound: RefCell::default(), referenced: RefCell::default() }
    }
}

impl Resolve<EndpointAddr> for ClusterResolver<'_> {
    fn resolve(&self, route: &RouteId, r: &BackendObjectRef) -> Result<Backend<EndpointAddr>, Unresolved> {
        let unresolved = |reason, message: String| Err(Unresolved { reason, message });
        let group_ok = r.group.as_deref().is_none_or(str::is_empty);
        if !group_ok || r.kind.as_deref().is_some_and(|k| k != "Service") {
            return unresolved(
                UnresolvedReason::InvalidKind,
                format!("backendRef {}: only core Services are supported", table::ref_name(r)),
            );
        }
        let namespace = r.namespace.as_deref().unwrap_or(&route.namespace);
        if namespace != route.namespace {
            let allowed = self.grants.as_ref().is_some_and(|by_ns| {
                by_ns.get(namespace).is_some_and(|gs| gs.iter().any(|g| g.allows_service(&route.namespace, &r.name)))
            });
            if !allowed {
                let why = if self.grants.is_none() {
                    "the ReferenceGrant CRD is not installed"
                } else {
                    "no ReferenceGrant allows it"
                };
                return unresolved(
                    UnresolvedReason::RefNotPermitted,
                    format!("backendRef {namespace}/{}: cross-namespace reference refused: {why}", r.name),
                );
            }
        }
        let Some(port) = r.port else {
            return unresolved(UnresolvedReason::UnsupportedValue, format!("backendRef {}: port is required", r.name));
        };
        let Some(svc) = self.services.get(&(namespace, r.name.as_str())) else {
            return unresolved(UnresolvedReason::BackendNotFound, format!("Service {namespace}/{} not found", r.name));
        };
        let slices = self.slices.get(&(namespace, r.name.as_str())).map(Vec::as_slice).unwrap_or_default();
        self.referenced.borrow_mut().insert((namespace.to_string(), r.name.clone()));
        let tls = match self.tls.lookup(namespace, &r.name, endpoints::port_name(svc, port)) {
            Some(Ok(tls)) => Some(tls),
            Some(Err(why)) => return unresolved(UnresolvedReason::InvalidBackendTlsPolicy, why.clone()),
            None => None,
        };
        let endpoints = endpoints::resolve(&format!("{namespace}/{}", r.name), svc, slices, port, tls.is_some())?;
        let mut bound = self.bound.borrow_mut();
        let same = |t: &Option<Arc<BackendTls>>| t.as_ref().map(|t| &t.settings) == tls.map(|t| &t.settings);
        if let Some(e) = endpoints.iter().find(|e| bound.get(*e).is_some_and(|t| !same(t))) {
            return unresolved(
                UnresolvedReason::InvalidBackendTlsPolicy,
                format!(
                    "Service {namespace}/{}: endpoint {e} is also an endpoint of a Service reached with other TLS \
                     settings (or without TLS); one address has one way to be reached",
                    r.name
                ),
            );
        }
        bound.extend(endpoints.iter().map(|e| (e.clone(), tls.cloned())));
        drop(bound);
        Ok(Backend { name: format!("{namespace}/{}:{port}", r.name).into(), endpoints })
    }
}

#[cfg(test)]
mod tests;
