//! The Gateway API `ReferenceGrant` (v1beta1), the part of it we read: who may refer to what across
//! namespaces.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Allows references from resources in other namespaces to resources in this one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "gateway.networking.k8s.io", version = "v1beta1", kind = "ReferenceGrant", namespaced)]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to.
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// A group/kind in a namespace allowed to refer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReferenceGrantFrom {
    /// API group of the referrer.
    #[serde(default)]
    pub group: String,
    /// Kind of the referrer.
    pub kind: String,
    /// Namespace of the referrer.
    pub namespace: String,
}

/// A group/kind (and optionally a name) that may be referred to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReferenceGrantTo {
    /// API group of the referent ("" for core).
    #[serde(default)]
    pub group: String,
    /// Kind of the referent.
    pub kind: String,
    /// Name of the referent; absent allows all of that kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReferenceGrant {
    /// Whether this grant lets a GrpcRoute in `from_namespace` refer to the Service `service`.
    pub fn allows_service(&self, from_namespace: &str, service: &str) -> bool {
        let from = self
            .spec
            .from
            .iter()
            .any(|f| f.group == "switchboard.dev" && f.kind == "GrpcRoute" && f.namespace == from_namespace);
        let to = self
            .spec
            .to
            .iter()
            .any(|t| t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == service));
        from && to
    }
}
