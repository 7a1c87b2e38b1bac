//! The Gateway API's BackendTLSPolicy (`gateway.networking.k8s.io/v1`, standard channel) turned into how
//! switchboard reaches each targeted Service over TLS. Pure: the caller looks up the CA ConfigMaps (their
//! `ca.crt`); watching policies and ConfigMaps, and using the result when the table is bound, is the
//! controller's part.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SubjectAltName;

/// The fields of a BackendTLSPolicy's spec that switchboard reads (`BackendTLSPolicy` is the object; only
/// the controller reads it, from the Gateway API's CRD).
#[derive(kube::CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "BackendTLSPolicy",
    plural = "backendtlspolicies",
    namespaced,
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsPolicySpec {
    /// The Services (or ports of them, by `sectionName`) the policy applies to.
    pub target_refs: Vec<PolicyTargetRef>,
    /// How the backend's certificate is verified.
    pub validation: PolicyValidation,
}

/// A policy's status: one entry per ancestor and controller. Entries of other controllers are kept as they
/// are (the list is atomic: a writer reads it, changes its own entries and writes the whole list back).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct PolicyStatus {
    /// `status.ancestors`, as stored.
    #[serde(default)]
    pub ancestors: Vec<serde_json::Value>,
}

/// One target of a policy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// API group of the target (`""`: core).
    #[serde(default)]
    pub group: String,
    /// Kind of the target.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// A port name of the Service; none: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `spec.validation`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyValidation {
    /// ConfigMaps (key `ca.crt`) holding the CA bundle.
    #[serde(default)]
    pub ca_certificate_refs: Vec<LocalObjectRef>,
    /// `System`: the platform's CAs.
    #[serde(default, rename = "wellKnownCACertificates", skip_serializing_if = "Option::is_none")]
    pub well_known_ca_certificates: Option<String>,
    /// SNI, and the name verified when `subjectAltNames` is empty.
    pub hostname: String,
    /// Names the certificate must carry one of, instead of `hostname`.
    #[serde(default)]
    pub subject_alt_names: Vec<PolicySubjectAltName>,
}

/// A reference to an object in the policy's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// API group (`""`: core).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// One of `subjectAltNames`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySubjectAltName {
    /// `Hostname` or `URI`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `Hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// For `URI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// TLS to one targeted Service, as a policy asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTarget {
    /// The Service's name.
    pub service: String,
    /// The Service port (by name) it is limited to.
    pub port_name: Option<String>,
    /// The CA bundle, PEM: the referenced ConfigMaps' `ca.crt`, concatenated.
    pub ca_pem: String,
    /// Sent as SNI, and verified when `subject_alt_names` is empty.
    pub server_name: String,
    /// Verified instead of `server_name`.
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// Why a policy cannot be used, as the Gateway API's condition reasons say it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    /// `Accepted=False` with this reason (`NoValidCACertificate`, `Invalid`); `None`: the policy is accepted,
    /// though some CA reference is bad (connections to its targets still fail).
    pub accepted: Option<&'static str>,
    /// `ResolvedRefs=False` with this reason (`InvalidCACertificateRef`, `InvalidKind`) when a CA reference is
    /// at fault.
    pub resolved_refs: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

fn invalid(message: String) -> PolicyError {
    PolicyError { accepted: Some("Invalid"), resolved_refs: None, message }
}

/// The TLS settings of every core Service the policy targets (other kinds are not switchboard's). `ca_crt(name)`
/// is the `ca.crt` of the ConfigMap `name` in the policy's namespace, if there is one; `system_ca` the
/// platform's CA bundle (`wellKnownCACertificates: System`), if one was found.
pub fn policy_targets(
    spec: &BackendTlsPolicySpec,
    ca_crt: impl Fn(&str) -> Option<String>,
    system_ca: Option<&str>,
) -> Result<Vec<PolicyTarget>, PolicyError> {
    let v = &spec.validation;
    let well_known = v.well_known_ca_certificates.as_deref().filter(|w| !w.is_empty());
    let system = match well_known {
        None => None,
        Some(_) if !v.ca_certificate_refs.is_empty() => {
            return Err(invalid("caCertificateRefs and wellKnownCACertificates are exclusive".into()))
        }
        Some("System") => match system_ca {
            Some(pem) => Some(pem.to_string()),
            None => {
                return Err(invalid(
                    "wellKnownCACertificates: System, but switchboard found no system CA bundle (SSL_CERT_FILE, \
                     /etc/ssl/certs/ca-certificates.crt)"
                        .into(),
                ))
            }
        },
        Some(other) => return Err(invalid(format!("wellKnownCACertificates: {other:?} is not a known value"))),
    };
    if v.ca_certificate_refs.is_empty() && system.is_none() {
        return Err(PolicyError {
            accepted: Some("NoValidCACertificate"),
            resolved_refs: None,
            message: "caCertificateRefs is empty".into(),
        });
    }
    let subject_alt_names = v
        .subject_alt_names
        .iter()
        .map(|n| match (n.kind.as_str(), &n.hostname, &n.uri) {
            ("Hostname", Some(h), _) if h.starts_with('*') => {
                Err(invalid(format!("subjectAltNames: wildcard hostname {h:?} is not supported; name the host")))
            }
            ("Hostname", Some(h), _) if !h.is_empty() => Ok(SubjectAltName::Dns(h.to_ascii_lowercase())),
            ("URI", _, Some(u)) if !u.is_empty() => Ok(SubjectAltName::Uri(u.clone())),
            (kind, ..) => Err(invalid(format!("subjectAltNames: a {kind:?} entry without its value"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ca_pem = system.unwrap_or_default();
    let mut bad = Vec::new();
    for r in &v.ca_certificate_refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            let kind = if r.group.is_empty() { r.kind.clone() } else { format!("{}.{}", r.kind, r.group) };
            bad.push(("InvalidKind", format!("caCertificateRef {kind} {}: only ConfigMaps are supported", r.name)));
            continue;
        }
        match ca_crt(&r.name).filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----")) {
            Some(pem) => {
                ca_pem.push_str(pem.trim_end());
                ca_pem.push('\n');
            }
            None => bad.push((
                "InvalidCACertificateRef",
                format!("caCertificateRef ConfigMap {}: missing, or no PEM certificate under ca.crt", r.name),
            )),
        }
    }
    if let Some((reason, _)) = bad.first() {
        let all = bad.len() == v.ca_certificate_refs.len();
        let message = bad.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
        return Err(PolicyError {
            accepted: all.then_some("NoValidCACertificate"),
            resolved_refs: Some(reason),
            message,
        });
    }
    let targets = spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| PolicyTarget {
            service: t.name.clone(),
            port_name: t.section_name.clone().filter(|s| !s.is_empty()),
            ca_pem: ca_pem.clone(),
            server_name: v.hostname.clone(),
            subject_alt_names: subject_alt_names.clone(),
        })
        .collect();
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackendTlsPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn configmaps(name: &str) -> Option<String> {
        (name == "payments-ca").then(|| CA.to_string())
    }

    #[test]
    fn a_policy_maps_to_each_targeted_service() {
        let s = spec(
            "targetRefs:\n  - {group: \"\", kind: Service, name: payments, sectionName: grpc}\n  - {group: \"\", kind: Service, name: ledger}\n  - {group: example.com, kind: Other, name: x}\nvalidation:\n  caCertificateRefs: [{group: \"\", kind: ConfigMap, name: payments-ca}]\n  hostname: payments.shop.svc\n",
        );
        let got = policy_targets(&s, configmaps, None).unwrap();
        let summary: Vec<_> = got.iter().map(|t| (t.service.as_str(), t.port_name.as_deref())).collect();
        assert_eq!(summary, [("payments", Some("grpc")), ("ledger", None)], "other kinds are not ours");
        assert!(got.iter().all(|t| t.ca_pem == CA && t.server_name == "payments.shop.svc"));
    }

    #[test]
    fn well_known_system_cas_are_the_platforms_bundle() {
        let s = spec("targetRefs: [{group: \"\", kind: Service, name: p}]\nvalidation:\n  wellKnownCACertificates: System\n  hostname: p.example.com\n");
        assert_eq!(policy_targets(&s, configmaps, Some(CA)).unwrap()[0].ca_pem, CA);
        let e = policy_targets(&s, configmaps, None).unwrap_err();
        assert!(e.message.contains("no system CA bundle"), "{e}");
    }

    #[test]
    fn subject_alt_names_are_read() {
        let s = spec(
            "targetRefs: [{group: \"\", kind: Service, name: p}]\nvalidation:\n  caCertificateRefs: [{group: \"\", kind: ConfigMap, name: payments-ca}]\n  hostname: p.svc\n  subjectAltNames: [{type: URI, uri: \"spiffe://td/p\"}, {type: Hostname, hostname: P.Example}]\n",
        );
        let t = &policy_targets(&s, configmaps, None).unwrap()[0];
        assert_eq!(
            t.subject_alt_names,
            [SubjectAltName::Uri("spiffe://td/p".into()), SubjectAltName::Dns("p.example".into())]
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_its_reasons() {
        let base = "targetRefs: [{group: \"\", kind: Service, name: payments}]\nvalidation:\n  hostname: p.svc\n";
        let good = "{group: \"\", kind: ConfigMap, name: payments-ca}";
        let cases = [
            (
                "  caCertificateRefs: [{group: \"\", kind: ConfigMap, name: missing}]\n".to_string(),
                Some("NoValidCACertificate"),
                Some("InvalidCACertificateRef"),
            ),
            (
                "  caCertificateRefs: [{group: \"\", kind: Secret, name: payments-ca}]\n".to_string(),
                Some("NoValidCACertificate"),
                Some("InvalidKind"),
            ),
            (
                format!("  caCertificateRefs: [{good}, {{group: \"\", kind: ConfigMap, name: missing}}]\n"),
                None,
                Some("InvalidCACertificateRef"),
            ),
            ("  wellKnownCACertificates: System\n".to_string(), Some("Invalid"), None),
            ("  wellKnownCACertificates: Other\n".to_string(), Some("Invalid"), None),
            (
                format!(
                    "  caCertificateRefs: [{good}]\n  subjectAltNames: [{{type: Hostname, hostname: \"*.p.svc\"}}]\n"
                ),
                Some("Invalid"),
                None,
            ),
            (String::new(), Some("NoValidCACertificate"), None),
        ];
        for (extra, accepted, resolved_refs) in cases {
            let e = policy_targets(&spec(&format!("{base}{extra}")), configmaps, None).unwrap_err();
            assert_eq!((e.accepted, e.resolved_refs), (accepted, resolved_refs), "{extra}: {e}");
        }
    }
}
