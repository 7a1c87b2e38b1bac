//! The Gateway API's BackendTLSPolicy (`gateway.networking.k8s.io/v1`, standard channel) turned into how
//! switchboard reaches each targeted Service over TLS. Pure: the caller looks up the CA ConfigMaps (their
//! `ca.crt`); watching policies and ConfigMaps, and using the result when the table is bound, is the
//! controller's part.

use serde::Deserialize;

/// The fields of a BackendTLSPolicy's spec that switchboard reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsPolicySpec {
    /// The Services (or ports of them, by `sectionName`) the policy applies to.
    pub target_refs: Vec<PolicyTargetRef>,
    /// How the backend's certificate is verified.
    pub validation: PolicyValidation,
}

/// One target of a policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
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
    #[serde(default)]
    pub section_name: Option<String>,
}

/// `spec.validation`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyValidation {
    /// ConfigMaps (key `ca.crt`) holding the CA bundle.
    #[serde(default)]
    pub ca_certificate_refs: Vec<LocalObjectRef>,
    /// `System`: the platform's CAs.
    #[serde(default)]
    pub well_known_ca_certificates: Option<String>,
    /// SNI, and the name verified when `subjectAltNames` is empty.
    pub hostname: String,
    /// Names the certificate must carry one of, instead of `hostname`.
    #[serde(default)]
    pub subject_alt_names: Vec<PolicySubjectAltName>,
}

/// A reference to an object in the policy's namespace.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySubjectAltName {
    /// `Hostname` or `URI`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `Hostname`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// For `URI`.
    #[serde(default)]
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
    /// Sent as SNI and verified.
    pub server_name: String,
}

/// Why a policy cannot be used, with the Gateway API condition reason it maps to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct PolicyError {
    /// `InvalidCACertificateRef`, `InvalidKind` or `NoValidCACertificate`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

fn error(reason: &'static str, message: String) -> PolicyError {
    PolicyError { reason, message }
}

/// The TLS settings of every Service the policy targets. `ca_crt(name)` is the `ca.crt` of the ConfigMap
/// `name` in the policy's namespace, if there is one.
pub fn policy_targets(
    spec: &BackendTlsPolicySpec,
    ca_crt: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PolicyTarget>, PolicyError> {
    let v = &spec.validation;
    if v.well_known_ca_certificates.is_some() {
        return Err(error(
            "NoValidCACertificate",
            "wellKnownCACertificates is not supported; reference a ConfigMap with caCertificateRefs".into(),
        ));
    }
    if !v.subject_alt_names.is_empty() {
        return Err(error("NoValidCACertificate", "subjectAltNames is not supported; set hostname only".into()));
    }
    if v.ca_certificate_refs.is_empty() {
        return Err(error("NoValidCACertificate", "caCertificateRefs is empty".into()));
    }
    let mut ca_pem = String::new();
    for r in &v.ca_certificate_refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            return Err(error(
                "InvalidKind",
                format!("caCertificateRef {}: only core ConfigMaps are supported", r.name),
            ));
        }
        let pem = ca_crt(&r.name).ok_or_else(|| {
            error("InvalidCACertificateRef", format!("ConfigMap {} has no ca.crt, or does not exist", r.name))
        })?;
        ca_pem.push_str(pem.trim_end());
        ca_pem.push('\n');
    }
    let targets = spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| PolicyTarget {
            service: t.name.clone(),
            port_name: t.section_name.clone(),
            ca_pem: ca_pem.clone(),
            server_name: v.hostname.clone(),
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
        let got = policy_targets(&s, configmaps).unwrap();
        let summary: Vec<_> = got.iter().map(|t| (t.service.as_str(), t.port_name.as_deref())).collect();
        assert_eq!(summary, [("payments", Some("grpc")), ("ledger", None)], "other kinds are not ours");
        assert!(got.iter().all(|t| t.ca_pem == CA && t.server_name == "payments.shop.svc"));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_its_reason() {
        let base = "targetRefs: [{group: \"\", kind: Service, name: payments}]\nvalidation:\n  hostname: p.svc\n";
        let cases = [
            ("  caCertificateRefs: [{group: \"\", kind: ConfigMap, name: missing}]\n", "InvalidCACertificateRef"),
            ("  caCertificateRefs: [{group: \"\", kind: Secret, name: payments-ca}]\n", "InvalidKind"),
            ("  wellKnownCACertificates: System\n", "NoValidCACertificate"),
            (
                "  caCertificateRefs: [{group: \"\", kind: ConfigMap, name: payments-ca}]\n  subjectAltNames: [{type: URI, uri: \"spiffe://td/p\"}]\n",
                "NoValidCACertificate",
            ),
            ("", "NoValidCACertificate"),
        ];
        for (extra, reason) in cases {
            let e = policy_targets(&spec(&format!("{base}{extra}")), configmaps).unwrap_err();
            assert_eq!(e.reason, reason, "{extra}: {e}");
        }
    }
}
