//! Cluster objects shaped as Kubernetes itself writes them, for seeding the test API server: a Service as the
//! API server stores it after `kubectl expose` (cluster IP, families, protocol, targetPort), and
//! EndpointSlices as the EndpointSlice controller writes them (generated name, managed-by label, owner
//! reference, all three conditions, `name: ""` for an unnamed port, node and pod references).

use std::net::SocketAddr;

use serde_json::{json, Value};

/// A ClusterIP Service with these (name, port, targetPort) ports; `None` names a port as `kubectl expose`
/// does (not at all).
pub fn service(ns: &str, name: &str, ports: &[(Option<&str>, u16, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, port, target)| {
            let mut p = json!({"port": port, "protocol": "TCP", "targetPort": target});
            if let Some(n) = n {
                p["name"] = json!(n);
            }
            p
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": name},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": ports,
            "selector": {"app": name}, "sessionAffinity": "None", "type": "ClusterIP"
        },
        "status": {"loadBalancer": {}}
    })
}

/// Conditions of an endpoint.
#[derive(Clone, Copy, Debug)]
pub enum State {
    Ready,
    /// Shutting down but still serving (a pod in its termination grace period).
    Terminating,
    /// Not ready (starting, or failing its probe).
    NotReady,
}

/// A slice `{svc}-{suffix}` of Service `svc` for port `port_name` (`""` for an unnamed Service port), with one
/// endpoint per backend. All backends must share the slice's target port: endpoints of one slice have one
/// port, so backends on different ports go in different slices.
pub fn slice(ns: &str, svc: &str, suffix: &str, port_name: &str, endpoints: &[(SocketAddr, State)]) -> Value {
    let port = endpoints.first().map_or(0, |(a, _)| a.port());
    assert!(endpoints.iter().all(|(a, _)| a.port() == port), "one target port per slice");
    let eps: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (addr, state))| {
            let (ready, serving, terminating) = match state {
                State::Ready => (true, true, false),
                State::Terminating => (false, true, true),
                State::NotReady => (false, false, false),
            };
            json!({
                "addresses": [addr.ip().to_string()],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": "worker-1", "zone": "zone-a",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{svc}-pod-{i}"), "uid": format!("{svc}-{suffix}-{i}")}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {
            "namespace": ns, "name": format!("{svc}-{suffix}"), "generateName": format!("{svc}-"),
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": svc
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": format!("uid-{svc}"),
                "controller": true, "blockOwnerDeletion": true}]
        },
        "endpoints": eps,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })
}
