//! Standalone mode: routes from a file of GrpcRoute YAML documents, reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use serde::Deserialize;

use crate::crd::{BackendObjectRef, GrpcRoute};
use crate::proxy::Routes;
use crate::table::{
    self, Backend, EndpointAddr, Resolve, RouteId, RouteInput, RouteReport, Table, Unresolved, UnresolvedReason,
};

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

/// Parses every GrpcRoute document in `text` (documents separated by `---`; empty ones are skipped).
pub fn parse_routes(path: &Path, text: &str) -> Result<Vec<GrpcRoute>, FileError> {
    let mut routes = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |message: String| FileError::Parse { path: path.to_owned(), doc: i + 1, message };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version != "switchboard.dev/v1alpha1" || kind != "GrpcRoute" {
            return Err(err(format!(
                "expected apiVersion switchboard.dev/v1alpha1 and kind GrpcRoute, found {api_version:?} {kind:?}"
            )));
        }
        let route: GrpcRoute = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
        if route.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(err("metadata.name is required".into()));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// Reads and parses a routes file.
pub fn read_routes(path: &Path) -> Result<Vec<GrpcRoute>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    parse_routes(path, &text)
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
        let addr = match r.name.parse::<std::net::IpAddr>() {
            Ok(ip) => EndpointAddr::Socket((ip, port).into()),
            Err(_) => EndpointAddr::Host { host: r.name.as_str().into(), port },
        };
        Ok(Backend { name: table::ref_name(r).into(), endpoints: vec![addr] })
    }
}

/// Builds a table from routes in file order (the precedence tie-breaker standalone).
pub fn build_table(routes: &[GrpcRoute]) -> (Table<EndpointAddr>, Vec<RouteReport>) {
    let ids: Vec<RouteId> = routes
        .iter()
        .map(|r| RouteId { namespace: r.namespace().unwrap_or_else(|| "default".into()), name: r.name_any() })
        .collect();
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

/// Loads `path` into `routes` now; fails if the file cannot be read or parsed.
pub fn load(path: &Path, routes: &Routes) -> Result<usize, FileError> {
    let parsed = read_routes(path)?;
    let (table, reports) = build_table(&parsed);
    log_reports(&reports);
    let n = table.rules().len();
    routes.swap(table);
    Ok(n)
}

/// Polls `path` and swaps in a new table whenever its contents change. A file that fails to read or parse
/// is reported and the current table keeps serving.
///
/// A change is loaded once the file reads the same on two polls in a row: an editor or `cp` truncates the
/// file and then writes it, and a poll between the two would otherwise load an empty or half-written file
/// (an empty file is a valid routes file with no routes: every call UNIMPLEMENTED).
pub async fn watch(path: PathBuf, routes: Arc<Routes>, interval: Duration) {
    let mut loaded = std::fs::read(&path).ok();
    let mut seen = loaded.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = std::fs::read(&path).ok();
        let settled = current == seen;
        seen = current;
        if !settled || seen == loaded {
            continue;
        }
        loaded = seen.clone();
        let parsed = match &loaded {
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => parse_routes(&path, text),
                Err(e) => Err(FileError::Read { path: path.clone(), source: std::io::Error::other(e) }),
            },
            None => read_routes(&path),
        };
        match parsed {
            Ok(parsed) => {
                let (table, reports) = build_table(&parsed);
                log_reports(&reports);
                let rules = table.rules().len();
                routes.swap(table);
                tracing::info!(path = %path.display(), rules, "routes reloaded");
            }
            Err(e) => tracing::error!(error = %e, "routes file not reloaded; the previous table keeps serving"),
        }
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
