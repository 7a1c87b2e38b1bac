//! An in-process Kubernetes API server for controller tests: speaks the real list/watch HTTP protocol to the
//! real kube client, keeps objects as JSON in memory, and lets a test inject the failures a cluster has
//! (dropped watches, compacted history, 5xx answers) and count the requests the client made.
//!
//! ```ignore
//! let server = ApiServer::start().await;
//! let routes: Api<GrpcRoute> = Api::namespaced(server.client(), "default");
//! server.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "default"}}));
//! server.drop_watches();
//! ```

pub mod error;
pub mod handler;
pub mod schema;
pub mod select;
pub mod store;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;

use self::handler::{Logged, Shared};
use self::store::{Res, Store};

/// Knobs of the test server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How many changes the history keeps; a watch from before them gets 410 Expired.
    pub history: usize,
    /// How often a watch that asked for bookmarks (`allowWatchBookmarks=true`) gets one.
    pub bookmark_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { history: 1000, bookmark_every: Duration::from_secs(1) }
    }
}

/// A running test API server on a loopback port. Dropping it stops accepting and ends the open watches.
pub struct ApiServer {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let shared = Arc::new(Shared {
            store: Store::new(settings.history),
            settings,
            drops: tokio::sync::watch::channel(0).0,
            failures: Mutex::new((0, 500)),
            hang: std::sync::atomic::AtomicBool::new(false),
            unserved: Mutex::new(Vec::new()),
            forbidden: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        ApiServer { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server, over plain HTTP, with `default` as its default namespace.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("valid URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Ends every open watch stream cleanly, as an apiserver does on restart or timeout; watchers resume.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Forgets the change history, jumps the resourceVersion and ends every open watch, like an apiserver that
    /// restarted after an etcd compaction: watchers that resume from a version they had get 410 Expired and
    /// must relist.
    pub fn reset_history(&self) {
        self.shared.store.reset_history();
        self.drop_watches();
    }

    /// Answers the next `n` requests, whatever they are, with `code` and a `Status` body.
    pub fn fail_next(&self, n: usize, code: u16) {
        *self.shared.failures.lock().unwrap_or_else(|e| e.into_inner()) = (n, code);
    }

    /// While on, requests get no answer at all (a partitioned or overloaded API server).
    pub fn hang_requests(&self, on: bool) {
        self.shared.hang.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops serving a resource, as a cluster without its CRD: its paths answer 404 and discovery leaves
    /// it out.
    pub fn uninstall(&self, res: &Res) {
        lock(&self.shared.unserved).push(res.clone());
    }

    /// Serves a resource again (its CRD installed).
    pub fn install(&self, res: &Res) {
        lock(&self.shared.unserved).retain(|r| r != res);
    }

    /// Denies every request for `res` in namespace `ns`, or with `None` every cluster-wide request for it
    /// (what Role-only RBAC does), with 403 Forbidden.
    pub fn forbid(&self, res: &Res, ns: Option<&str>) {
        lock(&self.shared.forbidden).push((res.clone(), ns.map(str::to_string)));
    }

    /// Lifts every `forbid`.
    pub fn allow_all(&self) {
        lock(&self.shared.forbidden).clear();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Logged) -> bool) -> usize {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|r| pred(r)).count()
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.store.open_watches()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// Creates or overwrites an object as given (status included; its resource from `apiVersion` and `kind`,
    /// its namespace from `metadata.namespace`), through the same path as HTTP writes: watchers see it.
    /// Returns the stored object.
    pub fn apply(&self, obj: Value) -> Value {
        let res = Res::of_object(&obj).expect("object with apiVersion and kind");
        let ns = store::meta_str(&obj, "namespace").to_string();
        self.shared.store.put(&res, &ns, obj).expect("a valid object")
    }

    /// Deletes an object (`ns` empty for cluster-scoped ones); returns its last state if it existed.
    pub fn delete(&self, res: &Res, ns: &str, name: &str) -> Option<Value> {
        self.shared.store.delete(res, ns, name, None).ok()
    }

    pub fn get(&self, res: &Res, ns: &str, name: &str) -> Option<Value> {
        self.shared.store.get(res, ns, name).ok()
    }

    /// A typed `get`, e.g. `server.get_as::<GrpcRoute>("default", "r")`.
    pub fn get_as<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let obj = self.get(&Res::of::<K>(), ns, name)?;
        Some(serde_json::from_value(obj).expect("stored object deserializes"))
    }

    /// Objects of `res` in `ns`, or in every namespace.
    pub fn list(&self, res: &Res, ns: Option<&str>) -> Vec<Value> {
        self.shared.store.list(res, ns, &|_| true, None, None).map(|p| p.items).unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_watches();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler::handle(shared.clone(), req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
