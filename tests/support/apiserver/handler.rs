//! The HTTP side: maps Kubernetes API paths and verbs onto the store, answers with JSON or a watch stream,
//! injects the failures asked for, and logs every request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::watch as signal;

use super::error::ApiError;
use super::select::{FieldSelector, Filter, LabelSelector};
use super::store::{meta_str, Part, Res, Store};
use super::{watch, Settings};

pub type Body = BoxBody<Bytes, Infallible>;

/// What a request asked for, in Kubernetes' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    /// Anything else: non-resource paths, unsupported methods.
    Other,
}

/// One request as the server saw and answered it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub verb: Verb,
    pub method: Method,
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub res: Option<Res>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub field_manager: Option<String>,
    pub content_type: Option<String>,
    /// The HTTP status answered (200 for a watch, whatever its events).
    pub code: u16,
}

/// State shared by the handle, the connections and the watch tasks.
pub struct Shared {
    pub store: Store,
    pub settings: Settings,
    /// Bumped to end every open watch.
    pub drops: signal::Sender<u64>,
    /// Requests still to fail, and with which code.
    pub failures: Mutex<(usize, u16)>,
    /// Resources not served (CRDs not installed).
    pub unserved: Mutex<Vec<Res>>,
    /// (resource, namespace) denied; `None` denies the cluster-wide paths.
    pub forbidden: Mutex<Vec<(Res, Option<String>)>>,
    /// While set, requests are never answered.
    pub hang: std::sync::atomic::AtomicBool,
    pub log: Mutex<Vec<Logged>>,
}

impl Shared {
    fn take_failure(&self) -> Option<u16> {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        (f.0 > 0).then(|| {
            f.0 -= 1;
            f.1
        })
    }
}

/// Where a resource path points.
#[derive(Clone, Debug)]
pub struct Target {
    pub res: Res,
    /// `None` for cluster-wide paths: a list across namespaces, or a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// `/api/v1/...` or `/apis/{group}/{version}/...`, then `namespaces/{ns}/{plural}[/{name}[/{sub}]]` or
/// `{plural}[/{name}[/{sub}]]`.
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name.to_string()), None),
        [plural, name, sub] => (plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    Some(Target { res: Res::new(group, version, plural), namespace, name, sub })
}

pub type Query = HashMap<String, String>;

pub fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn verb_of(method: &Method, target: Option<&Target>, q: &Query) -> Verb {
    let Some(t) = target else { return Verb::Other };
    match *method {
        Method::GET if is_true(q.get("watch")) => Verb::Watch,
        Method::GET if t.name.is_some() => Verb::Get,
        Method::GET => Verb::List,
        Method::POST if t.name.is_none() => Verb::Create,
        Method::PUT if t.name.is_some() => Verb::Update,
        Method::PATCH if t.name.is_some() => Verb::Patch,
        Method::DELETE if t.name.is_some() => Verb::Delete,
        _ => Verb::Other,
    }
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if shared.hang.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let target = parse_path(parts.uri.path());
    let verb = verb_of(&parts.method, target.as_ref(), &query);
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut entry = Logged {
        verb,
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        res: target.as_ref().map(|t| t.res.clone()),
        namespace: target.as_ref().and_then(|t| t.namespace.clone()),
        name: target.as_ref().and_then(|t| t.name.clone()),
        subresource: target.as_ref().and_then(|t| t.sub.clone()),
        field_manager: query.get("fieldManager").cloned(),
        content_type: content_type.clone(),
        code: 0,
    };
    let response = match shared.take_failure() {
        Some(code) => error(&ApiError::injected(code)),
        None => {
            let req = Req { verb, path: parts.uri.path(), target, query: &query, content_type, body: &body };
            dispatch(&shared, req).unwrap_or_else(|e| error(&e))
        }
    };
    entry.code = response.status().as_u16();
    shared.log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    Ok(response)
}

struct Req<'a> {
    verb: Verb,
    path: &'a str,
    target: Option<Target>,
    query: &'a Query,
    content_type: Option<String>,
    body: &'a [u8],
}

fn dispatch(shared: &Arc<Shared>, req: Req<'_>) -> Result<Response<Body>, ApiError> {
    if req.path == "/version" {
        return Ok(json_response(200, &version()));
    }
    if let Some(list) = discovery(shared, req.path) {
        return list;
    }
    let Some(t) = req.target else { return Err(ApiError::not_found_path(req.path)) };
    if shared.unserved.lock().unwrap_or_else(|e| e.into_inner()).contains(&t.res) {
        return Err(ApiError::not_served());
    }
    let denied = shared
        .forbidden
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(r, ns)| *r == t.res && *ns == t.namespace);
    if denied {
        let verb = format!("{:?}", req.verb).to_lowercase();
        return Err(ApiError::forbidden(&t.res, &verb, t.namespace.as_deref()));
    }
    let part = match t.sub.as_deref() {
        None => Part::Main,
        Some("status") => Part::Status,
        Some(_) => return Err(ApiError::not_found_path(req.path)),
    };
    let store = &shared.store;
    let (res, ns, name) = (&t.res, t.namespace.as_deref().unwrap_or(""), t.name.as_deref().unwrap_or(""));
    let q = req.query;
    match req.verb {
        Verb::Get => Ok(json_response(200, &store.get(res, ns, name)?)),
        Verb::List => {
            let filter = filter(q, None)?;
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let token = q.get("continue").map(String::as_str).filter(|c| !c.is_empty());
            let page = store.list(res, t.namespace.as_deref(), &|o| filter.matches(o), limit, token)?;
            let kind = store.kind_of(res).unwrap_or_default();
            let mut metadata = json!({ "resourceVersion": page.rv.to_string() });
            if let Some(next) = page.next {
                metadata["continue"] = json!(next);
            }
            let list = json!({
                "kind": format!("{kind}List"),
                "apiVersion": res.api_version(),
                "metadata": metadata,
                "items": page.items,
            });
            Ok(json_response(200, &list))
        }
        Verb::Watch => watch::start(shared, t.res.clone(), t.namespace.clone(), filter(q, t.name.as_deref())?, q),
        Verb::Create => {
            let mut obj = parse_json(req.body)?;
            set_namespace(&mut obj, t.namespace.as_deref())?;
            Ok(json_response(201, &store.create(res, ns, obj)?))
        }
        Verb::Update => {
            let mut obj = parse_json(req.body)?;
            check_name(&obj, name)?;
            set_namespace(&mut obj, t.namespace.as_deref())?;
            Ok(json_response(200, &store.replace(res, ns, name, part, obj)?))
        }
        Verb::Patch => {
            let content_type = req.content_type.unwrap_or_default();
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let patch = parse_json(req.body)?;
                    Ok(json_response(200, &store.merge_patch(res, ns, name, part, &patch)?))
                }
                "application/apply-patch+yaml" => {
                    let manager = q
                        .get("fieldManager")
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
                    let mut config: Value = serde_json::from_slice(req.body)
                        .or_else(|_| serde_yaml::from_slice(req.body))
                        .map_err(|e| ApiError::bad_request(&format!("error decoding YAML: {e}")))?;
                    check_name(&config, name)?;
                    set_namespace(&mut config, t.namespace.as_deref())?;
                    let (obj, created) = store.apply(res, ns, name, part, manager, &config)?;
                    Ok(json_response(if created { 201 } else { 200 }, &obj))
                }
                other => Err(ApiError::unsupported_media_type(other)),
            }
        }
        Verb::Delete => {
            let options: Value = if req.body.is_empty() { json!({}) } else { parse_json(req.body)? };
            let precondition = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str);
            Ok(json_response(200, &store.delete(res, ns, name, precondition)?))
        }
        Verb::Other => Err(ApiError::method_not_allowed(req.path)),
    }
}

/// Resources the server serves and lists in discovery: (group, version, plural, kind, namespaced).
pub const SERVED: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "services", "Service", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "events", "Event", true),
    ("", "v1", "namespaces", "Namespace", false),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true),
    ("coordination.k8s.io", "v1", "leases", "Lease", true),
    ("events.k8s.io", "v1", "events", "Event", true),
    ("switchboard.dev", "v1alpha1", "grpcroutes", "GrpcRoute", true),
    ("gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant", true),
    ("gateway.networking.k8s.io", "v1", "backendtlspolicies", "BackendTLSPolicy", true),
];

/// `GET /api/v1` and `/apis/{group}/{version}`: the APIResourceList of what is served there, or 404 when
/// nothing is (the group/version of a CRD that is not installed).
fn discovery(shared: &Shared, path: &str) -> Option<Result<Response<Body>, ApiError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let unserved = shared.unserved.lock().unwrap_or_else(|e| e.into_inner());
    let resources: Vec<Value> = SERVED
        .iter()
        .filter(|(g, v, p, ..)| *g == group && *v == version && !unserved.contains(&Res::new(g, v, p)))
        .map(|(_, _, plural, kind, namespaced)| {
            json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    if resources.is_empty() {
        return Some(Err(ApiError::not_served()));
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )))
}

fn filter(q: &Query, name: Option<&str>) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""));
    let mut fields = q.get("fieldSelector").cloned().unwrap_or_default();
    if let Some(name) = name {
        fields = format!("{fields},metadata.name={name}");
    }
    let fields = FieldSelector::parse(&fields);
    match (labels, fields) {
        (Ok(labels), Ok(fields)) => Ok(Filter { labels, fields }),
        (Err(e), _) | (_, Err(e)) => Err(ApiError::bad_request(&e)),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(&format!("error decoding JSON: {e}")))
}

/// The body's name, when it has one, must be the URL's.
fn check_name(obj: &Value, name: &str) -> Result<(), ApiError> {
    match meta_str(obj, "name") {
        "" => Ok(()),
        n if n == name => Ok(()),
        n => Err(ApiError::bad_request(&format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
    }
}

/// Objects take the URL's namespace; a different one in the body is an error, and cluster-wide URLs hold
/// cluster-scoped objects, which have none.
fn set_namespace(obj: &mut Value, ns: Option<&str>) -> Result<(), ApiError> {
    let body_ns = meta_str(obj, "namespace").to_string();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return Ok(()) };
    match ns {
        Some(ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(_) => Ok(()),
        None => {
            meta.remove("namespace");
            Ok(())
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-switchboard-test", "gitCommit": "", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "", "compiler": "", "platform": "linux/amd64",
    })
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).expect("JSON values serialize")))
        .expect("valid response")
}

pub fn error(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}
