//! BackendTLSPolicies and the CA ConfigMaps they name, turned into how each Service port is reached over TLS
//! and into each policy's outcome for its status. Pure: the controller passes reflector snapshots.
//!
//! A Service targeted by a policy that cannot be used is not reached in cleartext: its backendRefs are
//! unresolved and calls to it fail (the Gateway API: "connections using an invalid CACertificateRef MUST fail").

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;

use crate::tls::{policy_targets, BackendTLSPolicy, BackendTls, BackendTlsSettings, Pem};

/// The key of a ConfigMap that holds a CA bundle.
pub const CA_KEY: &str = "ca.crt";

/// How to reach a Service's ports: over TLS with these settings, or not at all (why).
type Reach = Result<Arc<BackendTls>, String>;

/// How each port of one Service is reached: by port name (`None`: every port).
type PortReach = Vec<(Option<String>, Reach)>;

/// The TLS settings of every Service port some policy targets.
#[derive(Clone, Debug, Default)]
pub struct TlsIndex {
    /// By (namespace, Service).
    targets: HashMap<(String, String), PortReach>,
}

impl TlsIndex {
    /// How the port named `port_name` of `namespace/service` is reached, if a policy says: a policy for that
    /// port (its `sectionName`) wins over one for the whole Service.
    pub fn lookup(&self, namespace: &str, service: &str, port_name: Option<&str>) -> Option<&Reach> {
        let list = self.targets.get(&(namespace.to_string(), service.to_string()))?;
        let exact = list.iter().find(|(p, _)| p.is_some() && p.as_deref() == port_name);
        exact.or_else(|| list.iter().find(|(p, _)| p.is_none())).map(|(_, r)| r)
    }
}

/// A condition of one policy for one target: `Ok` is `status: True`, `Err` is `False` with reason and message.
pub type Verdict = Result<(), (&'static str, String)>;

/// What a policy means for one Service (port) it targets (an ancestor in its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetOutcome {
    /// The Service.
    pub service: String,
    /// The port, by name (`sectionName`), when the target names one.
    pub port: Option<String>,
    /// `Accepted`.
    pub accepted: Verdict,
    /// `ResolvedRefs`.
    pub resolved_refs: Verdict,
}

/// What the build made of one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// One per core Service among its targetRefs (other kinds are left to other controllers).
    pub targets: Vec<TargetOutcome>,
}

/// TLS client configurations already built, by settings, so a rebuild (most are for endpoint changes) parses
/// no PEM and keeps each endpoint's pool (pools are keyed by settings).
#[derive(Debug, Default)]
pub struct TlsCache(HashMap<BackendTlsSettings, Arc<BackendTls>>);

/// What the policies are read with besides the cluster's objects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Platform<'a> {
    /// The platform's CA bundle, for `wellKnownCACertificates: System`.
    pub system_ca: Option<&'a Pem>,
    /// The chain and key presented to the backends, if they ask.
    pub client_cert: Option<&'a (Pem, Pem)>,
    /// Why ConfigMaps cannot be read, when they cannot: every CA reference is then unresolved.
    pub config_maps_unreadable: Option<&'a str>,
}

/// The TLS index and the policies' outcomes. Among policies for the same Service port, the oldest (then the
/// first by name) wins and the others are `Conflicted`.
pub fn index(
    policies: &[Arc<BackendTLSPolicy>],
    config_maps: &[Arc<ConfigMap>],
    services: &[Arc<Service>],
    platform: &Platform<'_>,
    cache: &mut TlsCache,
) -> (TlsIndex, Vec<PolicyOutcome>) {
    let Platform { system_ca, client_cert, config_maps_unreadable } = *platform;
    // Borrowed, not copied: the bundle is some 200 KB and most rebuilds use none of it.
    let system_pem = system_ca.and_then(|p| std::str::from_utf8(&p.data).ok());
    let ca: HashMap<(String, String), &str> = config_maps
        .iter()
        .filter_map(|cm| {
            let pem = cm.data.as_ref()?.get(CA_KEY)?;
            Some(((cm.namespace().unwrap_or_default(), cm.name_any()), pem.as_str()))
        })
        .collect();
    let svc: HashMap<(String, String), &Service> =
        services.iter().map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s.as_ref())).collect();
    let mut ordered: Vec<&BackendTLSPolicy> = policies.iter().map(Arc::as_ref).collect();
    ordered.sort_by_key(|p| {
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created.is_none(), created, p.name_any(), p.namespace())
    });

    let mut next = TlsCache::default();
    let mut index = TlsIndex::default();
    // (namespace, Service, port name) → the policy that has it.
    let mut claimed: HashMap<(String, String, Option<String>), String> = HashMap::new();
    let mut outcomes = Vec::with_capacity(ordered.len());
    for policy in ordered {
        let ns = policy.namespace().unwrap_or_default();
        let ca_crt = |name: &str| ca.get(&(ns.clone(), name.to_string())).map(|s| s.to_string());
        let mut resolved = policy_targets(&policy.spec, ca_crt, system_pem);
        if let (Err(e), Some(why)) = (&mut resolved, config_maps_unreadable) {
            if e.resolved_refs == Some("InvalidCACertificateRef") {
                e.message = format!("ConfigMaps cannot be read ({why}); {}", e.message);
            }
        }
        // ResolvedRefs is about the policy's references, whatever becomes of each target.
        let refs_verdict: Verdict = match &resolved {
            Err(e) => e.resolved_refs.map_or(Ok(()), |r| Err((r, e.message.clone()))),
            Ok(_) => Ok(()),
        };
        let mut targets = Vec::new();
        for t in policy.spec.target_refs.iter().filter(|t| t.group.is_empty() && t.kind == "Service") {
            let port = t.section_name.clone().filter(|s| !s.is_empty());
            let found = match (svc.get(&(ns.clone(), t.name.clone())), &port) {
                (None, _) => Err(format!("Service {ns}/{} not found", t.name)),
                (Some(s), Some(p)) if !has_port(s, p) => Err(format!("Service {ns}/{} has no port named {p}", t.name)),
                _ => Ok(()),
            };
            let key = (ns.clone(), t.name.clone(), port.clone());
            let verdict = |accepted, resolved_refs| TargetOutcome {
                service: t.name.clone(),
                port: port.clone(),
                accepted,
                resolved_refs,
            };
            if let Err(message) = found {
                targets.push(verdict(Err(("TargetNotFound", message)), refs_verdict.clone()));
                continue;
            }
            if let Some(winner) = claimed.get(&key) {
                let message = format!("BackendTLSPolicy {winner} targets the same Service port and takes precedence");
                targets.push(verdict(Err(("Conflicted", message)), refs_verdict.clone()));
                continue;
            }
            claimed.insert(key, policy.name_any());
            let reach = match &resolved {
                Ok(settings) => {
                    let target = settings.iter().find(|s| s.service == t.name && s.port_name == port);
                    let target = target.expect("policy_targets maps every Service targetRef");
                    let refs: Vec<&str> =
                        policy.spec.validation.ca_certificate_refs.iter().map(|r| r.name.as_str()).collect();
                    let origin = match (refs.is_empty(), system_ca) {
                        (true, Some(system)) => system.origin.clone(),
                        _ => format!("ConfigMap {ns}/{}", refs.join(",")),
                    };
                    let settings = BackendTlsSettings {
                        ca: Pem::new(origin, target.ca_pem.as_bytes()),
                        server_name: target.server_name.clone(),
                        subject_alt_names: target.subject_alt_names.clone(),
                        client_cert: client_cert.cloned(),
                    };
                    load(settings, cache, &mut next)
                }
                Err(e) => Err(e.message.clone()),
            };
            let (accepted, resolved_refs) = match (&resolved, &reach) {
                (Err(e), _) => (
                    e.accepted.map_or(Ok(()), |r| Err((r, e.message.clone()))),
                    e.resolved_refs.map_or(Ok(()), |r| Err((r, e.message.clone()))),
                ),
                // The ConfigMaps hold PEM that rustls cannot use.
                (Ok(_), Err(m)) => {
                    (Err(("NoValidCACertificate", m.clone())), Err(("InvalidCACertificateRef", m.clone())))
                }
                (Ok(_), Ok(_)) => (Ok(()), Ok(())),
            };
            let why = |m: String| format!("BackendTLSPolicy {ns}/{}: {m}", policy.name_any());
            index.targets.entry((ns.clone(), t.name.clone())).or_default().push((port.clone(), reach.map_err(why)));
            targets.push(verdict(accepted, resolved_refs));
        }
        outcomes.push(PolicyOutcome {
            namespace: ns,
            name: policy.name_any(),
            generation: policy.metadata.generation,
            targets,
        });
    }
    *cache = next;
    (index, outcomes)
}

fn has_port(svc: &Service, name: &str) -> bool {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    ports.iter().any(|p| p.name.as_deref() == Some(name))
}

fn load(settings: BackendTlsSettings, cache: &TlsCache, next: &mut TlsCache) -> Reach {
    if let Some(t) = cache.0.get(&settings).or_else(|| next.0.get(&settings)).cloned() {
        next.0.insert(settings, t.clone());
        return Ok(t);
    }
    let tls = Arc::new(BackendTls::load(settings.clone()).map_err(|e| e.to_string())?);
    next.0.insert(settings, tls.clone());
    Ok(tls)
}

#[cfg(test)]
mod tests;
