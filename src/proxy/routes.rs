//! The data plane's current route table, swapped atomically as a whole, with the metric handles its calls
//! use resolved once per table.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::authz::RuleIdentities;
use super::methods::{CallMetrics, Learned, ServiceMethods, DEFAULT_MAX_METHODS_PER_SERVICE};
use super::pool::{Endpoint, Pools};
use crate::metrics::{BackendMetrics, MethodMetrics, Metrics, UNKNOWN};
use crate::table::{split_path, EndpointAddr, Table, Target};
use crate::tls::BackendTls;

/// The table the data plane serves from: endpoints bound to their connection pools.
pub type ProxyTable = Table<Arc<Endpoint>>;

/// What a table is bound with besides its endpoints: the rules' allow-lists of client identities, and the
/// endpoints reached over TLS.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// Allow-lists of client identities, per rule.
    pub identities: RuleIdentities,
    /// TLS to these endpoints.
    pub backend_tls: HashMap<EndpointAddr, Arc<BackendTls>>,
}

/// A bound table and the metric handles for everything it names.
#[derive(Debug)]
pub struct Bound {
    table: ProxyTable,
    methods: HashMap<String, Arc<MethodMetrics>>,
    services: HashMap<String, Arc<ServiceMethods>>,
    unknown: Arc<MethodMetrics>,
    /// By the address of a target's name (unique per target within this table).
    backends: HashMap<usize, Arc<BackendMetrics>>,
    /// The same handles by (route, backend) label values, for the next table to reuse.
    backend_labels: HashMap<(String, String), Arc<BackendMetrics>>,
    /// Allow-lists of client identities, by the address of their rule.
    identities: HashMap<usize, Arc<[String]>>,
}

impl Deref for Bound {
    type Target = ProxyTable;
    fn deref(&self) -> &ProxyTable {
        &self.table
    }
}

impl Bound {
    /// Resolves the metric handles of `table`, reusing those of `previous` (a label lookup in the registry
    /// costs a lock and an allocation; at thousands of backends, re-resolving every handle on each rebuild was
    /// most of the rebuild).
    fn new(
        table: ProxyTable,
        metrics: &Metrics,
        learned: &Learned,
        allow: &RuleIdentities,
        previous: Option<&Bound>,
    ) -> Self {
        let mut methods = HashMap::new();
        let mut services = HashMap::new();
        for (service, method) in table.known_methods() {
            match method {
                Some(m) => {
                    let path = format!("/{service}/{m}");
                    let handles = previous.and_then(|p| p.methods.get(&path)).cloned();
                    methods.insert(path, handles.unwrap_or_else(|| metrics.method(service, m)));
                }
                None => {
                    let handles = previous.and_then(|p| p.services.get(service)).cloned();
                    services.insert(service.to_string(), handles.unwrap_or_else(|| learned.service(service, metrics)));
                }
            }
        }
        let mut backends = HashMap::new();
        let mut backend_labels = HashMap::new();
        let mut identities = HashMap::new();
        for rule in table.rules() {
            if let Some(list) = allow.get(&rule.route, rule.index) {
                identities.insert(Arc::as_ptr(rule) as usize, list.clone());
            }
            let route = rule.route.to_string();
            for t in rule.backends.targets() {
                let name = match t {
                    Target::Backend(b) => &b.name,
                    Target::Unresolved { name, .. } => name,
                };
                let key = (route.clone(), name.to_string());
                let handles = previous
                    .and_then(|p| p.backend_labels.get(&key))
                    .cloned()
                    .unwrap_or_else(|| metrics.backend(&route, name));
                backends.insert(name_key(name), handles.clone());
                backend_labels.insert(key, handles);
            }
        }
        let unknown = previous.map_or_else(|| metrics.method(UNKNOWN, UNKNOWN), |p| p.unknown.clone());
        Self { table, methods, services, unknown, backends, backend_labels, identities }
    }

    /// The client identities `rule` (of this table) admits, if it admits only some.
    pub fn allowed_identities<E>(&self, rule: &Arc<crate::table::Rule<E>>) -> Option<&[String]> {
        if self.identities.is_empty() {
            return None;
        }
        self.identities.get(&(Arc::as_ptr(rule) as *const () as usize)).map(|l| &**l)
    }

    /// Handles for a call's method: the method if the table names it; else, for a service the table names,
    /// the method once learned (see `methods.rs`), `unknown` before, `other` beyond the cap; else `unknown`.
    pub fn method_metrics(&self, path: &str) -> CallMetrics {
        if let Some(m) = self.methods.get(path) {
            return CallMetrics::fixed(m.clone());
        }
        match split_path(path).and_then(|(s, m)| self.services.get(s).map(|s| (s, m))) {
            Some((service, method)) => service.label(method),
            None => CallMetrics::fixed(self.unknown.clone()),
        }
    }

    /// Handles for a route's backend (by the target's name, as the table holds it).
    pub fn backend_metrics(&self, name: &str) -> Option<&Arc<BackendMetrics>> {
        self.backends.get(&name_key(name))
    }
}

/// Targets are told apart by where their name lives: the table owns each name once.
fn name_key(name: &str) -> usize {
    name.as_ptr() as usize
}

/// The current table. Readers take no lock; a swap never disturbs calls that already hold the old table.
#[derive(Debug)]
pub struct Routes {
    current: ArcSwap<Bound>,
    pools: Pools,
    metrics: Metrics,
    learned: Learned,
    generation: AtomicU64,
}

impl Routes {
    /// An empty table (every call is UNIMPLEMENTED) over `pools`, with metrics of its own.
    pub fn new(pools: Pools) -> Self {
        Self::with_metrics(pools, Metrics::new())
    }

    /// An empty table over `pools`, counting into `metrics`.
    pub fn with_metrics(pools: Pools, metrics: Metrics) -> Self {
        let learned = Learned::new(DEFAULT_MAX_METHODS_PER_SERVICE);
        let empty = Bound::new(Table::default(), &metrics, &learned, &RuleIdentities::default(), None);
        Self { current: ArcSwap::from_pointee(empty), pools, metrics, learned, generation: AtomicU64::new(0) }
    }

    /// Learns at most `cap` method labels per service (0: none, all calls of service-level rules count under
    /// `unknown`). Set before the first table is swapped in.
    pub fn max_methods_per_service(mut self, cap: usize) -> Self {
        self.learned = Learned::new(cap);
        self
    }

    /// Binds a freshly built table to the connection pools and makes it current.
    pub fn swap(&self, table: Table<EndpointAddr>) {
        self.swap_with(table, &Policies::default());
    }

    /// Like [`Routes::swap`], with the policies of the same routes.
    pub fn swap_with(&self, table: Table<EndpointAddr>, policies: &Policies) {
        let mut bound = table.map_endpoints(|addr| self.pools.endpoint_with(addr, policies.backend_tls.get(addr)));
        let previous = self.current.load();
        bound.inherit_retries(&previous.table);
        self.metrics.table_rules.set(bound.rules().len() as i64);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.metrics.table_updated.set(now.as_secs() as i64);
        let bound = Bound::new(bound, &self.metrics, &self.learned, &policies.identities, Some(&previous));
        self.current.store(Arc::new(bound));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current table; the caller keeps it for the whole call.
    pub fn load(&self) -> Arc<Bound> {
        self.current.load_full()
    }

    /// How many tables have been swapped in.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The metrics calls through this table count into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
