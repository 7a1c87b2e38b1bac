//! What the stores keep of each watched object: only what the table builder and the status writer read.
//! managedFields alone are often larger than the rest of an object; at 10,000 Services and EndpointSlices
//! the difference is most of the controller's memory.

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, ObjectMeta};

use super::backend_tls::CA_KEY;
use super::index::SERVICE_NAME_LABEL;
use super::reference_grant::ReferenceGrant;
use crate::tls::BackendTLSPolicy;

/// Keeps name, namespace, uid, generation, creation time and resourceVersion; drops managedFields,
/// annotations (`last-applied-configuration` is a copy of the object), labels, owner references and finalizers.
fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.labels = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
}

/// A GrpcRoute keeps spec and status (the writer compares the stored status).
pub fn route(r: &mut DynamicObject) {
    meta(&mut r.metadata);
}

/// A Service keeps its spec's type, cluster IP, families and ports; status and selector go.
pub fn service(s: &mut Service) {
    meta(&mut s.metadata);
    s.status = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.selector = None;
        spec.load_balancer_source_ranges = None;
        spec.external_ips = None;
        spec.session_affinity_config = None;
    }
}

/// An EndpointSlice keeps its ports and each endpoint's addresses and conditions; topology hints, node,
/// zone and the pod reference go.
/// Of the labels, only the one naming the Service stays.
pub fn slice(s: &mut EndpointSlice) {
    let service = s.metadata.labels.as_mut().and_then(|l| l.remove_entry(SERVICE_NAME_LABEL));
    meta(&mut s.metadata);
    s.metadata.labels = service.map(|(k, v)| [(k, v)].into());
    for ep in &mut s.endpoints {
        ep.hints = None;
        ep.node_name = None;
        ep.zone = None;
        ep.target_ref = None;
        ep.deprecated_topology = None;
        ep.hostname = None;
    }
}

/// A ReferenceGrant keeps its spec.
pub fn grant(g: &mut ReferenceGrant) {
    meta(&mut g.metadata);
}

/// A BackendTLSPolicy keeps spec and status (the writer merges its entries into the stored ancestors).
pub fn tls_policy(p: &mut BackendTLSPolicy) {
    meta(&mut p.metadata);
}

/// A ConfigMap keeps only its `ca.crt`: the one key a BackendTLSPolicy reads, and every other ConfigMap of
/// the cluster shrinks to its name.
pub fn config_map(c: &mut ConfigMap) {
    meta(&mut c.metadata);
    c.binary_data = None;
    c.data = c.data.take().and_then(|mut d| d.remove_entry(CA_KEY)).map(|(k, v)| [(k, v)].into());
}
