//! Standalone mode: routes from a file of GrpcRoute YAML documents, reloaded when the file changes. The file
//! may also hold `BackendTLS` documents: which backendRefs are reached over TLS, and how.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use serde::Deserialize;

use crate::crd::{BackendObjectRef, GrpcRoute};
use crate::proxy::{Policies, Routes, RuleIdentities};
use crate::table::{
    self, Backend, EndpointAddr, Resolve, RouteId, RouteInput, RouteReport, Table, Unresolved, UnresolvedReason,
};
use crate::tls::{BackendTls, BackendTlsSettings, Pem, SubjectAltName};

/// A routes file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read routes file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A document is not a valid GrpcRoute.
    #[error("routes file {path}, document {doc}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based document number.
        doc: usize,
        /// What is wrong.
        message: String,
    },
}

/// A `BackendTLS` document's spec: how switchboard reaches some backendRefs over TLS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTlsSpec {
    /// The backendRefs it applies to, by name and port as the routes write them.
    pub backends: Vec<BackendTarget>,
    /// PEM CA bundle the backend's certificate must chain to (a relative path is relative to the file).
    pub ca_file: PathBuf,
    /// Name sent as SNI and that the backend's certificate must carry; default: the backendRef's name.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Names the backend's certificate must carry one of, instead of `serverName`: DNS names, or URIs
    /// (entries with `://`, e.g. SPIFFE IDs).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// PEM certificate chain presented to the backend (mTLS), with `clientKeyFile`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `clientCertFile`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// A backendRef a `BackendTLS` document applies to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendTarget {
    /// Host name or IP address.
    pub name: String,
    /// Port.
    pub port: u16,
}

/// The documents of a routes file.
#[derive(Clone, Debug, Default)]
pub struct RoutesFile {
    /// GrpcRoutes, in file order.
    pub routes: Vec<GrpcRoute>,
    /// `BackendTLS` specs with their 1-based document numbers.
    pub backend_tls: Vec<(usize, BackendTlsSpec)>,
}

/// Parses every GrpcRoute document in `text` (documents separated by `---`; empty ones are skipped).
pub fn parse_routes(path: &Path, text: &str) -> Result<Vec<GrpcRoute>, FileError> {
    parse_file(path, text).map(|f| f.routes)
}

/// Parses every GrpcRoute and `BackendTLS` document in `text`.
pub fn parse_file(path: &Path, text: &str) -> Result<RoutesFile, FileError> {
    let mut routes = Vec::new();
    let mut backend_tls = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |message: String| FileError::Parse { path: path.to_owned(), doc: i + 1, message };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version == "switchboard.dev/v1alpha1" && kind == "BackendTLS" {
            let spec = value.get("spec").cloned().ok_or_else(|| err("BackendTLS needs a spec".into()))?;
            let spec: BackendTlsSpec =
                serde_yaml::from_value(spec).map_err(|e| err(format!("BackendTLS spec: {e}")))?;
            backend_tls.push((i + 1, spec));
            continue;
        }
        if api_version != "switchboard.dev/v1alpha1" || kind != "GrpcRoute" {
            return Err(err(format!(
                "expected apiVersion switchboard.dev/v1alpha1 and kind GrpcRoute (or BackendTLS), found \
                 {api_version:?} {kind:?}"
            )));
        }
        let route: GrpcRoute = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
        if route.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(err("metadata.name is required".into()));
        }
        routes.push(route);
    }
    Ok(RoutesFile { routes, backend_tls })
}

/// Reads and parses a routes file's GrpcRoutes.
pub fn read_routes(path: &Path) -> Result<Vec<GrpcRoute>, FileError> {
    read_file(path).map(|f| f.routes)
}

/// Reads and parses a routes file.
pub fn read_file(path: &Path) -> Result<RoutesFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    parse_file(path, &text)
}

fn addr_of(name: &str, port: u16) -> EndpointAddr {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => EndpointAddr::Socket((ip, port).into()),
        Err(_) => EndpointAddr::Host { host: name.into(), port },
    }
}

impl RoutesFile {
    /// The TLS files its `BackendTLS` documents name, relative paths resolved against the directory of the
    /// routes file at `path`.
    pub fn tls_files(&self, path: &Path) -> Vec<PathBuf> {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = self
            .backend_tls
            .iter()
            .flat_map(|(_, s)| std::iter::once(&s.ca_file).chain(&s.client_cert_file).chain(&s.client_key_file))
            .map(|f| base.join(f))
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

/// The policies of a routes file at `path`: the rules' allow-lists, and the backends' TLS with its files read.
pub fn policies(path: &Path, file: &RoutesFile) -> Result<Policies, FileError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut loaded: HashMap<BackendTlsSettings, Arc<BackendTls>> = HashMap::new();
    let mut backend_tls = HashMap::new();
    for (doc, spec) in &file.backend_tls {
        let err = |message: String| FileError::Parse { path: path.to_owned(), doc: *doc, message };
        let read = |file: &PathBuf| Pem::read(&base.join(file)).map_err(|e| err(e.to_string()));
        let client_cert = match (&spec.client_cert_file, &spec.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => return Err(err("clientCertFile and clientKeyFile go together".into())),
        };
        let ca = read(&spec.ca_file)?;
        let subject_alt_names: Vec<SubjectAltName> = spec
            .subject_alt_names
            .iter()
            .map(|n| match n.contains("://") {
                true => SubjectAltName::Uri(n.clone()),
                false => SubjectAltName::Dns(n.to_ascii_lowercase()),
            })
            .collect();
        for target in &spec.backends {
            let settings = BackendTlsSettings {
                ca: ca.clone(),
                server_name: spec.server_name.clone().unwrap_or_else(|| target.name.clone()),
                subject_alt_names: subject_alt_names.clone(),
                client_cert: client_cert.clone(),
            };
            let tls = match loaded.get(&settings) {
                Some(t) => t.clone(),
                None => {
                    let t = Arc::new(BackendTls::load(settings.clone()).map_err(|e| err(e.to_string()))?);
                    loaded.insert(settings, t.clone());
                    t
                }
            };
            backend_tls.insert(addr_of(&target.name, target.port), tls);
        }
    }
    Ok(Policies { identities: client_identities(&file.routes), backend_tls })
}

/// Resolves standalone backendRefs: `name` is a host name or IP address and `port` its port.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsResolver;

impl Resolve<EndpointAddr> for DnsResolver {
    fn resolve(&self, _route: &RouteId, r: &BackendObjectRef) -> Result<Backend<EndpointAddr>, Unresolved> {
        let kind_ok = r.kind.as_deref().is_none_or(|k| k == "Service") && r.group.as_deref().is_none_or(str::is_empty);
        if !kind_ok {
            return Err(Unresolved {
                reason: UnresolvedReason::InvalidKind,
                message: format!("backendRef {}: only core Services are supported", table::ref_name(r)),
            });
        }
        let Some(port) = r.port else {
            return Err(Unresolved {
                reason: UnresolvedReason::UnsupportedValue,
                message: format!("backendRef {}: port is required", r.name),
            });
        };
        Ok(Backend { name: table::ref_name(r).into(), endpoints: vec![addr_of(&r.name, port)] })
    }
}

fn route_ids(routes: &[GrpcRoute]) -> Vec<RouteId> {
    routes
        .iter()
        .map(|r| RouteId { namespace: r.namespace().unwrap_or_else(|| "default".into()), name: r.name_any() })
        .collect()
}

/// Builds a table from routes in file order (the precedence tie-breaker standalone).
pub fn build_table(routes: &[GrpcRoute]) -> (Table<EndpointAddr>, Vec<RouteReport>) {
    let ids = route_ids(routes);
    let inputs: Vec<RouteInput<'_>> = routes.iter().zip(&ids).map(|(r, id)| RouteInput { id, spec: &r.spec }).collect();
    let out = table::build(&inputs, &DnsResolver);
    (out.table, out.reports)
}

/// Logs one line per rejected route and per unresolved backendRef.
pub fn log_reports(reports: &[RouteReport]) {
    for r in reports {
        if let Err(e) = &r.accepted {
            tracing::error!(route = %r.id, error = %e, "route rejected");
        }
        for u in &r.unresolved {
            tracing::warn!(route = %r.id, reason = u.reason.as_str(), error = %u.message, "backendRef unresolved");
        }
    }
}

/// The rules' allow-lists of client identities.
pub fn client_identities(routes: &[GrpcRoute]) -> RuleIdentities {
    let ids = route_ids(routes);
    RuleIdentities::from_specs(ids.iter().zip(routes.iter().map(|r| &r.spec)))
}

/// Makes `parsed` the table `routes` serves, with the rules' allow-lists; returns the table's rules and the
/// routes' reports.
pub fn apply(parsed: &[GrpcRoute], routes: &Routes) -> (usize, Vec<RouteReport>) {
    let policies = Policies { identities: client_identities(parsed), ..Default::default() };
    apply_with(parsed, &policies, routes)
}

fn apply_with(parsed: &[GrpcRoute], policies: &Policies, routes: &Routes) -> (usize, Vec<RouteReport>) {
    let (table, reports) = build_table(parsed);
    let n = table.rules().len();
    routes.swap_with(table, policies);
    (n, reports)
}

/// Loads `path` into `routes` now; fails if the file cannot be read or parsed, or a TLS file cannot be used.
pub fn load(path: &Path, routes: &Routes) -> Result<usize, FileError> {
    let file = read_file(path)?;
    let policies = policies(path, &file)?;
    let (n, reports) = apply_with(&file.routes, &policies, routes);
    log_reports(&reports);
    Ok(n)
}

/// Polls `path`, and the TLS files it names, and swaps in a new table whenever their contents change. A file
/// that fails to read or parse is reported and the current table keeps serving.
///
/// A change is loaded once the files read the same on two polls in a row: an editor or `cp` truncates a file
/// and then writes it, and a poll between the two would otherwise load an empty or half-written file (an
/// empty file is a valid routes file with no routes: every call UNIMPLEMENTED). A CA or client certificate
/// that changed gives new TLS settings, so new connections use it; calls on open connections go on.
pub async fn watch(path: PathBuf, routes: Arc<Routes>, interval: Duration) {
    let mut loaded = Fingerprint::read(&path, None);
    let mut seen = loaded.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = Fingerprint::read(&path, Some(&seen));
        let settled = current.same(&seen);
        seen = current;
        if !settled || seen.same(&loaded) {
            continue;
        }
        loaded = seen.clone();
        match load(&path, &routes) {
            Ok(rules) => tracing::info!(path = %path.display(), rules, "routes reloaded"),
            Err(e) => tracing::error!(error = %e, "routes file not reloaded; the previous table keeps serving"),
        }
    }
}

/// The bytes of a routes file and of the TLS files it names (`None` for a file that cannot be read).
#[derive(Clone, Debug)]
struct Fingerprint {
    routes: Option<Vec<u8>>,
    /// The TLS files the routes name: derived from `routes`, so not compared.
    tls_files: Vec<PathBuf>,
    tls: Vec<Option<Vec<u8>>>,
}

impl Fingerprint {
    /// Reads the files; the routes are parsed for their TLS files only when they differ from `previous`.
    fn read(path: &Path, previous: Option<&Fingerprint>) -> Self {
        let routes = std::fs::read(path).ok();
        let tls_files = match previous {
            Some(p) if p.routes == routes => p.tls_files.clone(),
            _ => match routes.as_deref().map(String::from_utf8_lossy) {
                Some(text) => parse_file(path, &text).map(|f| f.tls_files(path)).unwrap_or_default(),
                None => Vec::new(),
            },
        };
        let tls = tls_files.iter().map(|f| std::fs::read(f).ok()).collect();
        Self { routes, tls_files, tls }
    }

    fn same(&self, other: &Self) -> bool {
        self.routes == other.routes && self.tls == other.tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
apiVersion: switchboard.dev/v1alpha1
kind: GrpcRoute
metadata: {name: a}
spec:
  rules:
    - matches: [{method: {service: demo.Echo}}]
      backendRefs: [{name: localhost, port: 50051}, {name: 127.0.0.1, port: 50052, weight: 2}]
---
apiVersion: switchboard.dev/v1alpha1
kind: GrpcRoute
metadata: {name: b, namespace: team}
spec:
  hostnames: ["*.example.com"]
  rules:
    - backendRefs: [{name: backend, kind: Pod, port: 1}, {name: noport}]
"#;

    #[test]
    fn parses_documents_in_order() {
        let routes = parse_routes(Path::new("r.yaml"), TWO).unwrap();
        assert_eq!(routes.len(), 2);
        let (table, reports) = build_table(&routes);
        assert_eq!(table.rules().len(), 2);
        assert_eq!(reports[1].id.to_string(), "team/b");
        let reasons: Vec<_> = reports[1].unresolved.iter().map(|u| u.reason).collect();
        assert_eq!(reasons, [UnresolvedReason::InvalidKind, UnresolvedReason::UnsupportedValue]);
    }

    #[test]
    fn bad_documents_are_named() {
        let err = parse_routes(Path::new("r.yaml"), "kind: Pod\napiVersion: v1\n").unwrap_err().to_string();
        assert!(err.contains("document 1") && err.contains("GrpcRoute"), "{err}");
        let err =
            parse_routes(Path::new("r.yaml"), TWO.replace("rules:\n    - matches", "rules: 3\n    - matches").as_str())
                .unwrap_err()
                .to_string();
        assert!(err.contains("r.yaml"), "{err}");
    }
}
