//! The object store behind the test API server: objects as JSON under one global resourceVersion, a bounded
//! history of changes for watches, and the write rules (server-set metadata, generation, the status
//! subresource, merge patch, a simplified server-side apply).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::schema::{self, Violation};

/// Checks an object before it is stored, as the API server's decoding and validation do.
pub type Validator = Box<dyn Fn(&Value) -> Result<(), Violation> + Send + Sync>;

/// A kind of resource as its URL names it: API group (`""` for core), version and plural.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Res {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl Res {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Res { group: group.into(), version: version.into(), plural: plural.into() }
    }

    /// The resource of a typed kube object, e.g. `Res::of::<GrpcRoute>()`.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Self {
        Res::new(&K::group(&()), &K::version(&()), &K::plural(&()))
    }

    /// The resource of an object, from its `apiVersion` and `kind`, with the plural Kubernetes would give it.
    pub fn of_object(obj: &Value) -> Option<Self> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        let kind = obj.get("kind")?.as_str()?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Some(Res::new(group, version, &plural_of(kind)))
    }

    /// `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The lower-case plural of a kind, by the English rules Kubernetes kinds follow.
pub fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower == "endpoints" {
        lower
    } else if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') {
        format!("{lower}es")
    } else if lower.ends_with('y') && !lower.ends_with("ay") && !lower.ends_with("ey") && !lower.ends_with("oy") {
        format!("{}ies", &lower[..lower.len() - 1])
    } else {
        format!("{lower}s")
    }
}

/// What a write did, as a watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed write.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub res: Res,
    pub namespace: String,
    pub kind: ChangeType,
    /// The object after the write; for a delete, its last state.
    pub object: Value,
    /// The object before a modification, so selector-filtered watches can turn it into ADDED or DELETED.
    pub old: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Everything but `.status`.
    Main,
    /// Only `.status`.
    Status,
}

/// Where a watch starts.
pub enum Start {
    /// Now, after synthetic ADDED events for the objects that exist (`resourceVersion` unset or `0`).
    Now,
    /// Just after this resourceVersion, replaying history from there.
    After(u64),
}

/// What a watch needs to begin: the objects to announce, the history to replay, and the live feed.
pub struct Subscription {
    pub initial: Vec<Value>,
    pub replay: Vec<Arc<Change>>,
    /// The store's resourceVersion when the feed was attached: everything up to it is in `initial`/`replay`.
    pub rv: u64,
    pub feed: mpsc::UnboundedReceiver<Arc<Change>>,
}

/// A page of a list.
pub struct Page {
    pub rv: u64,
    pub items: Vec<Value>,
    pub next: Option<String>,
}

type Key = (Res, String, String);

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// The oldest resourceVersion a watch may start after: every change after it is in `history`.
    floor: u64,
    watchers: Vec<mpsc::UnboundedSender<Arc<Change>>>,
    kinds: HashMap<Res, String>,
    uids: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    validators: HashMap<Res, Validator>,
}

/// How far the resourceVersion jumps on `reset_history`, so no earlier version is valid any more.
const EPOCH_JUMP: u64 = 1000;

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit,
                floor: 1,
                watchers: Vec::new(),
                kinds: HashMap::new(),
                uids: 0,
            }),
            validators: validators(),
        }
    }

    /// Rejects, as the API server would, an object with unknown fields or values its schema forbids, in the
    /// part being written (a status write is not refused for a spec stored before the schema got stricter:
    /// the API server's validation ratcheting).
    fn admit(&self, res: &Res, obj: &Value, part: Part) -> Result<(), ApiError> {
        let Some(validate) = self.validators.get(res) else { return Ok(()) };
        let written = match part {
            Part::Status => {
                let mut only = json!({});
                if let Some(st) = obj.get("status") {
                    only["status"] = st.clone();
                }
                only
            }
            Part::Main if res.group == "switchboard.dev" => {
                let mut main = obj.clone();
                if let Some(o) = main.as_object_mut() {
                    o.remove("status");
                }
                main
            }
            Part::Main => obj.clone(),
        };
        match validate(&written) {
            Ok(()) => Ok(()),
            Err(Violation::Unknown(field)) => {
                Err(ApiError::bad_request(&format!("strict decoding error: unknown field \"{field}\"")))
            }
            Err(Violation::Invalid(why)) => {
                Err(ApiError::invalid(&format!("{} \"{}\" is invalid: {why}", res.qualified(), meta_str(obj, "name"))))
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// The kind seen for objects of `res`, if any were written.
    pub fn kind_of(&self, res: &Res) -> Option<String> {
        self.lock().kinds.get(res).cloned()
    }

    pub fn open_watches(&self) -> usize {
        self.lock().watchers.iter().filter(|w| !w.is_closed()).count()
    }

    /// Forgets the history and jumps the resourceVersion, like an apiserver restarted after an etcd compaction:
    /// a watch from any version handed out so far gets 410 Expired.
    pub fn reset_history(&self) {
        let mut s = self.lock();
        s.history.clear();
        s.rv += EPOCH_JUMP;
        s.floor = s.rv;
    }

    pub fn get(&self, res: &Res, ns: &str, name: &str) -> Result<Value, ApiError> {
        let s = self.lock();
        s.objects.get(&key(res, ns, name)).cloned().ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Objects of `res` (in `ns`, or in every namespace) that pass `keep`, in name order, at most `limit` of them,
    /// continuing after a previous page's `next` token.
    pub fn list(
        &self,
        res: &Res,
        ns: Option<&str>,
        keep: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let s = self.lock();
        let (rv, after) = match token {
            None => (s.rv, None),
            Some(t) => {
                let (rv, after) = t.split_once(':').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let rv: u64 = rv.parse().map_err(|_| ApiError::bad_request("invalid continue token"))?;
                if rv < s.floor {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result.",
                    ));
                }
                let (ans, aname) = after.split_once('/').unwrap_or(("", after));
                (rv, Some((ans.to_string(), aname.to_string())))
            }
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((r, ons, oname), obj) in &s.objects {
            if r != res || ns.is_some_and(|n| n != ons) {
                continue;
            }
            if after.as_ref().is_some_and(|(ans, aname)| (ons, oname) <= (ans, aname)) {
                continue;
            }
            if !keep(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let last: &Value = items.last().expect("limit > 0");
                next = Some(format!("{rv}:{}/{}", meta_str(last, "namespace"), meta_str(last, "name")));
                break;
            }
            items.push(obj.clone());
        }
        Ok(Page { rv, items, next })
    }

    /// Attaches a watch feed, atomically with the snapshot or history it starts from.
    pub fn subscribe(&self, res: &Res, ns: Option<&str>, start: Start) -> Result<Subscription, ApiError> {
        let mut s = self.lock();
        let (initial, replay) = match start {
            Start::Now => {
                let initial = s
                    .objects
                    .iter()
                    .filter(|((r, ons, _), _)| r == res && ns.is_none_or(|n| n == ons))
                    .map(|(_, o)| o.clone())
                    .collect();
                (initial, Vec::new())
            }
            Start::After(from) if from < s.floor => {
                return Err(ApiError::expired(&format!("too old resource version: {from} ({})", s.floor)));
            }
            Start::After(from) => (Vec::new(), s.history.iter().filter(|c| c.rv > from).cloned().collect()),
        };
        let (tx, feed) = mpsc::unbounded_channel();
        s.watchers.push(tx);
        Ok(Subscription { initial, replay, rv: s.rv, feed })
    }

    /// Creates an object; 409 AlreadyExists if one has its name.
    pub fn create(&self, res: &Res, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let mut s = self.lock();
        let name = s.name_for(&mut obj)?;
        if s.objects.contains_key(&key(res, ns, &name)) {
            return Err(ApiError::already_exists(res, &name));
        }
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
        self.admit(res, &obj, Part::Main)?;
        Ok(s.insert(res, ns, &name, obj))
    }

    /// Replaces an object (PUT); 409 Conflict if the body carries a stale resourceVersion.
    pub fn replace(&self, res: &Res, ns: &str, name: &str, part: Part, obj: Value) -> Result<Value, ApiError> {
        let mut s = self.lock();
        let old = s.objects.get(&key(res, ns, name)).cloned().ok_or_else(|| ApiError::not_found(res, name))?;
        check_precondition(res, name, &old, &obj)?;
        let new = restrict(&old, obj, part);
        self.admit(res, &new, part)?;
        Ok(s.update(res, ns, name, old, new))
    }

    /// RFC 7386 JSON merge patch.
    pub fn merge_patch(&self, res: &Res, ns: &str, name: &str, part: Part, patch: &Value) -> Result<Value, ApiError> {
        let mut s = self.lock();
        let old = s.objects.get(&key(res, ns, name)).cloned().ok_or_else(|| ApiError::not_found(res, name))?;
        check_precondition(res, name, &old, patch)?;
        let mut new = old.clone();
        merge(&mut new, patch);
        let new = restrict(&old, new, part);
        self.admit(res, &new, part)?;
        Ok(s.update(res, ns, name, old, new))
    }

    /// Server-side apply, simplified: the applied configuration is merged into the object (maps merge, lists are
    /// replaced) and `manager` is recorded in `metadata.managedFields`. Creates the object if it is absent (only
    /// for the main resource, as the real apiserver). Returns the object and whether it was created.
    pub fn apply(
        &self,
        res: &Res,
        ns: &str,
        name: &str,
        part: Part,
        manager: &str,
        config: &Value,
    ) -> Result<(Value, bool), ApiError> {
        let mut s = self.lock();
        let subresource = (part == Part::Status).then_some("status");
        match s.objects.get(&key(res, ns, name)).cloned() {
            None if part == Part::Status => Err(ApiError::not_found(res, name)),
            None => {
                let mut obj = config.clone();
                set_meta(&mut obj, "name", json!(name));
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
                record_manager(&mut obj, manager, "Apply", subresource, &res.api_version());
                self.admit(res, &obj, part)?;
                Ok((s.insert(res, ns, name, obj), true))
            }
            Some(old) => {
                check_precondition(res, name, &old, config)?;
                let mut new = old.clone();
                merge(&mut new, config);
                let mut new = restrict(&old, new, part);
                record_manager(&mut new, manager, "Apply", subresource, &res.api_version());
                self.admit(res, &new, part)?;
                Ok((s.update(res, ns, name, old, new), false))
            }
        }
    }

    /// Deletes an object; `precondition_rv` as in DeleteOptions.preconditions.
    pub fn delete(&self, res: &Res, ns: &str, name: &str, precondition_rv: Option<&str>) -> Result<Value, ApiError> {
        let mut s = self.lock();
        let k = key(res, ns, name);
        let old = s.objects.get(&k).ok_or_else(|| ApiError::not_found(res, name))?;
        if precondition_rv.is_some_and(|rv| rv != meta_str(old, "resourceVersion")) {
            return Err(ApiError::conflict(res, name));
        }
        let mut last = s.objects.remove(&k).expect("checked above");
        let rv = s.next_rv();
        set_meta(&mut last, "resourceVersion", json!(rv.to_string()));
        s.record(Change {
            rv,
            res: res.clone(),
            namespace: ns.into(),
            kind: ChangeType::Deleted,
            object: last.clone(),
            old: None,
        });
        Ok(last)
    }

    /// Creates or overwrites an object as given, status included, without preconditions: the tests' way to seed
    /// and change the cluster. Watches see it like any other write.
    pub fn put(&self, res: &Res, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let mut s = self.lock();
        let name = s.name_for(&mut obj)?;
        match s.objects.get(&key(res, ns, &name)).cloned() {
            None => Ok(s.insert(res, ns, &name, obj)),
            Some(old) => Ok(s.update(res, ns, &name, old, obj)),
        }
    }
}

/// The schemas the server enforces on HTTP writes: the GrpcRoute CRD's, and for the built-in kinds the
/// controller writes, their typed structs. (Objects seeded with `ApiServer::apply` are stored as given.)
fn validators() -> HashMap<Res, Validator> {
    use kube::CustomResourceExt;
    let crd = switchboard::crd::GrpcRoute::crd();
    let version = &crd.spec.versions[0];
    let crd_schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("CRD has a schema");
    let crd_schema = serde_json::to_value(crd_schema).expect("schema serializes");
    let typed = |f: fn(&Value) -> Option<String>| -> Validator {
        Box::new(move |obj| f(obj).map_or(Ok(()), |field| Err(Violation::Unknown(field))))
    };
    use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service, events::v1::Event};
    [
        (
            Res::of::<switchboard::crd::GrpcRoute>(),
            Box::new(move |obj: &Value| schema::validate(&crd_schema, obj)) as Validator,
        ),
        (Res::of::<Lease>(), typed(schema::unknown_builtin_field::<Lease>)),
        (Res::of::<Event>(), typed(schema::unknown_builtin_field::<Event>)),
        (Res::of::<Service>(), typed(schema::unknown_builtin_field::<Service>)),
    ]
    .into_iter()
    .collect()
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        self.watchers.retain(|w| w.send(change.clone()).is_ok());
    }

    /// The object's name, generated from `generateName` when it has none.
    fn name_for(&mut self, obj: &mut Value) -> Result<String, ApiError> {
        if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Ok(name.to_string());
        }
        let prefix = obj.pointer("/metadata/generateName").and_then(Value::as_str).filter(|n| !n.is_empty());
        let Some(prefix) = prefix else {
            return Err(ApiError::invalid("metadata.name: Required value: name or generateName is required"));
        };
        let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
        let name = format!("{prefix}{suffix}");
        set_meta(obj, "name", json!(name));
        Ok(name)
    }

    fn insert(&mut self, res: &Res, ns: &str, name: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uids);
        self.stamp_types(res, &mut obj);
        set_meta(&mut obj, "name", json!(name));
        if !ns.is_empty() {
            set_meta(&mut obj, "namespace", json!(ns));
        }
        set_meta(&mut obj, "uid", json!(uid));
        set_meta(&mut obj, "creationTimestamp", json!(now()));
        set_meta(&mut obj, "generation", json!(1));
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        self.objects.insert(key(res, ns, name), obj.clone());
        let change = Change {
            rv,
            res: res.clone(),
            namespace: ns.into(),
            kind: ChangeType::Added,
            object: obj.clone(),
            old: None,
        };
        self.record(change);
        obj
    }

    /// Stores `new` in place of `old`, keeping the server-owned metadata; a write that changes nothing is a no-op
    /// (no new resourceVersion, no event), as on a real apiserver.
    fn update(&mut self, res: &Res, ns: &str, name: &str, old: Value, mut new: Value) -> Value {
        self.stamp_types(res, &mut new);
        for field in ["name", "namespace", "uid", "creationTimestamp", "resourceVersion"] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(v) => set_meta(&mut new, field, v.clone()),
                None => remove_meta(&mut new, field),
            }
        }
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let bump = i64::from(without_meta_and_status(&old) != without_meta_and_status(&new));
        set_meta(&mut new, "generation", json!(generation + bump));
        if new == old {
            return old;
        }
        let rv = self.next_rv();
        set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
        self.objects.insert(key(res, ns, name), new.clone());
        let change = Change {
            rv,
            res: res.clone(),
            namespace: ns.into(),
            kind: ChangeType::Modified,
            object: new.clone(),
            old: Some(old),
        };
        self.record(change);
        new
    }

    /// Fills in `apiVersion` and `kind`, and learns the kind for list and bookmark type fields.
    fn stamp_types(&mut self, res: &Res, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        o.insert("apiVersion".into(), json!(res.api_version()));
        match o.get("kind").and_then(Value::as_str) {
            Some(kind) => {
                self.kinds.insert(res.clone(), kind.to_string());
            }
            None => {
                if let Some(kind) = self.kinds.get(res) {
                    o.insert("kind".into(), json!(kind));
                }
            }
        }
    }
}

fn key(res: &Res, ns: &str, name: &str) -> Key {
    (res.clone(), ns.to_string(), name.to_string())
}

fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).expect("in range").to_string()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("")
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("made an object").insert(field.into(), value);
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// A body's `metadata.resourceVersion`, when present, must be the stored one (optimistic concurrency).
fn check_precondition(res: &Res, name: &str, old: &Value, body: &Value) -> Result<(), ApiError> {
    match body.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        Some(rv) if !rv.is_empty() && rv != meta_str(old, "resourceVersion") => Err(ApiError::conflict(res, name)),
        _ => Ok(()),
    }
}

/// The main resource never changes `.status`; the status subresource changes nothing else.
fn restrict(old: &Value, new: Value, part: Part) -> Value {
    match part {
        Part::Main => {
            let mut out = new;
            if let Some(o) = out.as_object_mut() {
                match old.get("status") {
                    Some(st) => o.insert("status".into(), st.clone()),
                    None => o.remove("status"),
                };
            }
            out
        }
        Part::Status => {
            let mut out = old.clone();
            if let Some(o) = out.as_object_mut() {
                match new.get("status") {
                    Some(st) => o.insert("status".into(), st.clone()),
                    None => o.remove("status"),
                };
            }
            out
        }
    }
}

/// The parts of an object whose change bumps `metadata.generation`.
fn without_meta_and_status(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    o.remove("metadata");
    o.remove("status");
    Value::Object(o)
}

/// Records (or refreshes) `manager`'s entry in `metadata.managedFields`.
fn record_manager(obj: &mut Value, manager: &str, operation: &str, subresource: Option<&str>, api_version: &str) {
    let mut entries: Vec<Value> =
        obj.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let same = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(operation)
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    if !entries.iter().any(same) {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(manager));
        entry.insert("operation".into(), json!(operation));
        entry.insert("apiVersion".into(), json!(api_version));
        entry.insert("time".into(), json!(now()));
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), json!({}));
        if let Some(sub) = subresource {
            entry.insert("subresource".into(), json!(sub));
        }
        entries.push(Value::Object(entry));
    }
    set_meta(obj, "managedFields", Value::Array(entries));
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
