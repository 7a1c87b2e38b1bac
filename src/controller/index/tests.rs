use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use serde_json::json;

use super::*;
use crate::controller::reference_grant::{ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo};
use crate::table::{CallInfo, Pick, Target};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() }
}

fn route(ns: &str, name: &str, created: i64, spec: serde_json::Value) -> Arc<DynamicObject> {
    let ar = ApiResource::erase::<GrpcRoute>(&());
    let mut obj = DynamicObject::new(name, &ar).within(ns);
    obj.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
    ));
    obj.metadata.generation = Some(1);
    obj.data = json!({ "spec": spec });
    Arc::new(obj)
}

fn service(ns: &str, name: &str, ports: &[(i32, Option<&str>)]) -> Arc<Service> {
    Arc::new(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(p, n)| ServicePort { port: *p, name: n.map(Into::into), ..Default::default() })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// (address, ready, terminating)
fn slice(
    ns: &str,
    svc: &str,
    port_name: Option<&str>,
    target: i32,
    eps: &[(&str, Option<bool>, Option<bool>)],
) -> Arc<EndpointSlice> {
    let mut m = meta(ns, &format!("{svc}-abc"));
    m.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
    Arc::new(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(a, ready, terminating)| Endpoint {
                addresses: vec![a.to_string()],
                conditions: Some(EndpointConditions { ready: *ready, terminating: *terminating, serving: None }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort { name: port_name.map(Into::into), port: Some(target), ..Default::default() }]),
    })
}

fn to(svc: &str, ns: Option<&str>, port: u16) -> serde_json::Value {
    json!({ "rules": [{ "backendRefs": [{ "name": svc, "namespace": ns, "port": port }] }] })
}

fn endpoints(table: &Table<EndpointAddr>) -> Vec<String> {
    match table.rules()[0].backends.targets().next().unwrap() {
        Target::Backend(b) => b.endpoints.iter().map(ToString::to_string).collect(),
        Target::Unresolved { reason, .. } => vec![format!("unresolved: {reason}")],
    }
}

#[test]
fn ready_endpoints_of_the_named_port_only() {
    let snap = Snapshot {
        routes: vec![route("app", "r", 1, to("echo", None, 80))],
        services: vec![service("app", "echo", &[(80, Some("grpc")), (9090, Some("metrics"))])],
        slices: vec![
            slice(
                "app",
                "echo",
                Some("grpc"),
                8080,
                &[
                    ("10.0.0.1", Some(true), None),
                    ("10.0.0.2", None, None),
                    ("10.0.0.3", Some(false), None),
                    ("10.0.0.4", Some(true), Some(true)),
                ],
            ),
            slice("app", "echo", Some("metrics"), 9090, &[("10.0.0.9", Some(true), None)]),
        ],
        ..Default::default()
    };
    let (table, outcomes) = build(&snap);
    assert_eq!(
        endpoints(&table),
        ["10.0.0.1:8080", "10.0.0.2:8080"],
        "not-ready and terminating endpoints get no calls"
    );
    let report = outcomes[0].report.as_ref().unwrap();
    assert!(report.accepted.is_ok() && report.unresolved.is_empty());
}

#[test]
fn unresolved_references_get_their_reasons() {
    let cases = [
        (json!({"rules": [{"backendRefs": [{"name": "nope", "port": 80}]}]}), UnresolvedReason::BackendNotFound),
        (json!({"rules": [{"backendRefs": [{"name": "echo", "port": 81}]}]}), UnresolvedReason::BackendNotFound),
        (
            json!({"rules": [{"backendRefs": [{"name": "echo", "kind": "Pod", "port": 80}]}]}),
            UnresolvedReason::InvalidKind,
        ),
        (json!({"rules": [{"backendRefs": [{"name": "echo"}]}]}), UnresolvedReason::UnsupportedValue),
        (to("echo", Some("other"), 80), UnresolvedReason::RefNotPermitted),
    ];
    for (spec, reason) in cases {
        let snap = Snapshot {
            routes: vec![route("app", "r", 1, spec.clone())],
            services: vec![service("app", "echo", &[(80, None)]), service("other", "echo", &[(80, None)])],
            ..Default::default()
        };
        let (table, outcomes) = build(&snap);
        let report = outcomes[0].report.as_ref().unwrap();
        assert_eq!(report.unresolved[0].reason, reason, "{spec}");
        let h = http::HeaderMap::new();
        let rule = table.lookup(&CallInfo { authority: "", path: "/a.B/C", headers: &h }).unwrap();
        assert!(matches!(rule.backends.pick(), Pick::Unresolved { .. }), "its share answers UNAVAILABLE");
    }
}

#[test]
fn reference_grants_allow_cross_namespace_refs() {
    let grant = |from_ns: &str, name: Option<&str>| {
        Arc::new(ReferenceGrant {
            metadata: meta("other", "g"),
            spec: ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: "switchboard.dev".into(),
                    kind: "GrpcRoute".into(),
                    namespace: from_ns.into(),
                }],
                to: vec![ReferenceGrantTo { group: String::new(), kind: "Service".into(), name: name.map(Into::into) }],
            },
        })
    };
    let base = Snapshot {
        routes: vec![route("app", "r", 1, to("echo", Some("other"), 80))],
        services: vec![service("other", "echo", &[(80, None)])],
        slices: vec![slice("other", "echo", None, 5000, &[("10.1.0.1", Some(true), None)])],
        grants: Some(vec![]),
        ..Default::default()
    };
    let unresolved = |s: &Snapshot| build(s).1[0].report.as_ref().unwrap().unresolved.clone();
    assert_eq!(unresolved(&base)[0].reason, UnresolvedReason::RefNotPermitted);
    let no_crd = Snapshot { grants: None, ..base.clone() };
    assert!(unresolved(&no_crd)[0].message.contains("not installed"));
    let wrong_ns = Snapshot { grants: Some(vec![grant("elsewhere", None)]), ..base.clone() };
    assert_eq!(unresolved(&wrong_ns)[0].reason, UnresolvedReason::RefNotPermitted);
    let wrong_name = Snapshot { grants: Some(vec![grant("app", Some("different"))]), ..base.clone() };
    assert_eq!(unresolved(&wrong_name)[0].reason, UnresolvedReason::RefNotPermitted);
    let granted = Snapshot { grants: Some(vec![grant("app", Some("echo"))]), ..base };
    assert!(unresolved(&granted).is_empty());
    assert_eq!(endpoints(&build(&granted).0), ["10.1.0.1:5000"]);
}

#[test]
fn a_route_that_does_not_deserialize_is_reported_and_the_rest_serve() {
    let snap = Snapshot {
        routes: vec![
            route("app", "broken", 1, json!({"rules": "not a list"})),
            route("app", "good", 2, to("echo", None, 80)),
        ],
        services: vec![service("app", "echo", &[(80, None)])],
        ..Default::default()
    };
    let (table, outcomes) = build(&snap);
    assert_eq!(table.rules().len(), 1);
    let broken = outcomes.iter().find(|o| o.id.name == "broken").unwrap();
    assert!(broken.report.as_ref().unwrap_err().contains("invalid GrpcRoute"));
}

#[test]
fn older_routes_win_ties() {
    let spec = |svc: &str| json!({"rules": [{"matches": [{"method": {"service": "a.B"}}], "backendRefs": [{"name": svc, "port": 80}]}]});
    let snap = Snapshot {
        routes: vec![route("app", "newer", 20, spec("new")), route("app", "older", 10, spec("old"))],
        services: vec![service("app", "old", &[(80, None)]), service("app", "new", &[(80, None)])],
        ..Default::default()
    };
    let (table, _) = build(&snap);
    let h = http::HeaderMap::new();
    let rule = table.lookup(&CallInfo { authority: "", path: "/a.B/C", headers: &h }).unwrap();
    assert_eq!(rule.route.name, "older");
}

#[test]
fn same_age_ties_go_by_namespace_then_name() {
    let spec = |svc: &str| json!({"rules": [{"matches": [{"method": {"service": "a.B"}}], "backendRefs": [{"name": svc, "port": 80}]}]});
    let snap = Snapshot {
        routes: vec![
            route("b-ns", "a", 10, spec("x")),
            route("a-ns", "z", 10, spec("y")),
            route("a-ns", "b", 10, spec("z")),
        ],
        services: ["x", "y", "z"]
            .iter()
            .flat_map(|s| [service("a-ns", s, &[(80, None)]), service("b-ns", s, &[(80, None)])])
            .collect(),
        ..Default::default()
    };
    let (table, _) = build(&snap);
    let h = http::HeaderMap::new();
    let rule = table.lookup(&CallInfo { authority: "", path: "/a.B/C", headers: &h }).unwrap();
    assert_eq!(rule.route.to_string(), "a-ns/b");
}

/// Services and EndpointSlices exactly as the API server and the EndpointSlice controller write them (fields
/// copied from `kubectl get -o json` on Kubernetes 1.33), not as a test would guess them.
mod as_kubernetes_writes_them {
    use super::*;

    /// `kubectl expose deployment echo --port 50051` (one unnamed port), with `extra` merged into `spec`.
    fn k8s_service(name: &str, extra: serde_json::Value) -> Arc<Service> {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "app", "labels": {"app": name}, "uid": "6f1c2a7e-0000-4000-8000-000000000001"},
            "spec": {
                "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"], "internalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"port": 50051, "protocol": "TCP", "targetPort": 50051}],
                "selector": {"app": name}, "sessionAffinity": "None", "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        });
        merge(&mut svc["spec"], &extra);
        Arc::new(serde_json::from_value(svc).unwrap())
    }

    /// JSON merge patch (RFC 7386): `null` removes a field.
    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else { return };
        for (k, v) in p {
            match v {
                serde_json::Value::Null => {
                    t.remove(k);
                }
                serde_json::Value::Object(_) if t.get(k).is_some_and(|e| e.is_object()) => merge(&mut t[k], v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// One endpoint: (address, ready, serving, terminating, pod).
    type Ep<'a> = (&'a str, bool, bool, bool, &'a str);

    /// A slice as the EndpointSlice controller writes it: generated name, managed-by label, owner reference,
    /// all three conditions set, `name: ""` for an unnamed Service port.
    fn k8s_slice(
        svc: &str,
        suffix: &str,
        family: &str,
        ports: serde_json::Value,
        eps: &[Ep<'_>],
    ) -> Arc<EndpointSlice> {
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(addr, ready, serving, terminating, pod)| {
                json!({
                    "addresses": [addr],
                    "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                    "nodeName": "worker-1", "zone": "zone-a",
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": "app", "uid": format!("uid-{pod}")}
                })
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
            "metadata": {
                "name": format!("{svc}-{suffix}"), "generateName": format!("{svc}-"), "namespace": "app",
                "labels": {
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    "kubernetes.io/service-name": svc
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": "6f1c2a7e-0000-4000-8000-000000000001",
                    "controller": true, "blockOwnerDeletion": true}]
            },
            "endpoints": endpoints,
            "ports": ports
        });
        Arc::new(serde_json::from_value(slice).unwrap())
    }

    fn unnamed(port: u16) -> serde_json::Value {
        json!([{"name": "", "port": port, "protocol": "TCP"}])
    }

    fn resolve(services: Vec<Arc<Service>>, slices: Vec<Arc<EndpointSlice>>, port: u16) -> Vec<String> {
        let snap = Snapshot {
            routes: vec![route("app", "r", 1, to("echo", None, port))],
            services,
            slices,
            ..Default::default()
        };
        let (table, outcomes) = build(&snap);
        match &outcomes[0].report.as_ref().unwrap().unresolved[..] {
            [] => endpoints(&table),
            [u, ..] => vec![format!("{}: {}", u.reason.as_str(), u.message)],
        }
    }

    #[test]
    fn an_unnamed_port_gets_its_endpoints() {
        let slices =
            vec![k8s_slice("echo", "x7k2p", "IPv4", unnamed(50051), &[("10.244.0.5", true, true, false, "a")])];
        assert_eq!(resolve(vec![k8s_service("echo", json!({}))], slices, 50051), ["10.244.0.5:50051"]);
    }

    #[test]
    fn endpoints_from_every_slice_of_the_service() {
        let slices = vec![
            k8s_slice("echo", "aaaaa", "IPv4", unnamed(8080), &[("10.244.0.5", true, true, false, "a")]),
            k8s_slice("echo", "bbbbb", "IPv4", unnamed(8080), &[("10.244.1.7", true, true, false, "b")]),
            // Another Service's slice in the same namespace.
            k8s_slice("other", "ccccc", "IPv4", unnamed(8080), &[("10.244.2.9", true, true, false, "c")]),
        ];
        let svc = k8s_service("echo", json!({"ports": [{"port": 50051, "protocol": "TCP", "targetPort": 8080}]}));
        assert_eq!(resolve(vec![svc], slices, 50051), ["10.244.0.5:8080", "10.244.1.7:8080"]);
    }

    #[test]
    fn terminating_endpoints_serve_only_while_none_is_ready() {
        let svc = || vec![k8s_service("echo", json!({}))];
        let one = |eps: &[Ep<'_>]| vec![k8s_slice("echo", "x7k2p", "IPv4", unnamed(50051), eps)];
        let rolling = one(&[("10.244.0.5", true, true, false, "new"), ("10.244.0.6", false, true, true, "old")]);
        assert_eq!(resolve(svc(), rolling, 50051), ["10.244.0.5:50051"], "ready ones first");
        let last = one(&[("10.244.0.6", false, true, true, "old"), ("10.244.0.7", false, false, true, "gone")]);
        assert_eq!(resolve(svc(), last, 50051), ["10.244.0.6:50051"], "serving-but-terminating when nothing is ready");
        let starting = one(&[("10.244.0.8", false, false, false, "starting")]);
        assert!(resolve(svc(), starting, 50051).is_empty(), "not ready, not terminating: nothing");
    }

    #[test]
    fn dual_stack_uses_the_primary_family_once_per_pod() {
        let spec = json!({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
            "clusterIP": "fd00:10:96::1234", "clusterIPs": ["fd00:10:96::1234", "10.96.12.34"]});
        let slices = vec![
            k8s_slice("echo", "v4abc", "IPv4", unnamed(50051), &[("10.244.0.5", true, true, false, "a")]),
            k8s_slice("echo", "v6abc", "IPv6", unnamed(50051), &[("fd00:10:244::5", true, true, false, "a")]),
        ];
        assert_eq!(resolve(vec![k8s_service("echo", spec)], slices.clone(), 50051), ["[fd00:10:244::5]:50051"]);
        let v4_first = json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"});
        assert_eq!(resolve(vec![k8s_service("echo", v4_first)], slices, 50051), ["10.244.0.5:50051"]);
    }

    #[test]
    fn protocols_that_cannot_carry_grpc_are_refused() {
        let udp = json!({"ports": [{"port": 50051, "protocol": "UDP", "targetPort": 50051}]});
        let out = resolve(vec![k8s_service("echo", udp)], vec![], 50051);
        assert!(out[0].starts_with("UnsupportedProtocol: ") && out[0].contains("UDP"), "{out:?}");
        let http1 = json!({"ports": [{"port": 50051, "protocol": "TCP", "appProtocol": "http", "targetPort": 50051}]});
        let out = resolve(vec![k8s_service("echo", http1)], vec![], 50051);
        assert!(out[0].starts_with("UnsupportedProtocol: ") && out[0].contains("appProtocol http"), "{out:?}");
        let h2c = json!({"ports": [{"port": 50051, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "targetPort": 50051}]});
        let slices =
            vec![k8s_slice("echo", "x7k2p", "IPv4", unnamed(50051), &[("10.244.0.5", true, true, false, "a")])];
        assert_eq!(resolve(vec![k8s_service("echo", h2c)], slices, 50051), ["10.244.0.5:50051"]);
    }

    #[test]
    fn external_name_services_are_refused() {
        let spec = json!({"type": "ExternalName", "externalName": "api.example.com", "clusterIP": null,
            "clusterIPs": null, "ipFamilies": null, "ipFamilyPolicy": null, "selector": null});
        let out = resolve(vec![k8s_service("echo", spec)], vec![], 50051);
        assert!(out[0].starts_with("UnsupportedValue: ") && out[0].contains("ExternalName"), "{out:?}");
    }

    #[test]
    fn headless_services_resolve_to_their_pods() {
        let named = json!({"clusterIP": "None", "clusterIPs": ["None"],
            "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP", "targetPort": 9000}]});
        let slices = vec![k8s_slice(
            "echo",
            "x7k2p",
            "IPv4",
            json!([{"name": "grpc", "port": 9000, "protocol": "TCP"}]),
            &[("10.244.0.5", true, true, false, "a")],
        )];
        assert_eq!(resolve(vec![k8s_service("echo", named)], slices, 50051), ["10.244.0.5:9000"]);
        // Headless without ports: the slices have none either, and the backendRef's port is the pods' port.
        let portless = json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": null});
        let slices = vec![k8s_slice("echo", "x7k2p", "IPv4", json!(null), &[("10.244.0.5", true, true, false, "a")])];
        assert_eq!(resolve(vec![k8s_service("echo", portless)], slices, 7000), ["10.244.0.5:7000"]);
    }
}

#[test]
fn the_route_cache_rereads_only_changed_routes() {
    let versioned = |rv: &str, svc: &str| {
        let mut r = route("app", "r", 1, to(svc, None, 80));
        Arc::make_mut(&mut r).metadata.resource_version = Some(rv.into());
        r
    };
    let services = vec![service("app", "a", &[(80, None)]), service("app", "b", &[(80, None)])];
    let snap = |r| Snapshot { routes: vec![r], services: services.clone(), ..Default::default() };
    let backend = |t: &Table<EndpointAddr>| match t.rules()[0].backends.targets().next().unwrap() {
        Target::Backend(b) => b.name.to_string(),
        Target::Unresolved { name, .. } => name.to_string(),
    };
    let mut cache = RouteCache::default();
    let (t, _) = build_cached(&snap(versioned("1", "a")), &mut cache);
    assert_eq!(backend(&t), "app/a:80");
    // Same resourceVersion: the stored object cannot have changed, the cached parse is used.
    let (t, _) = build_cached(&snap(versioned("1", "b")), &mut cache);
    assert_eq!(backend(&t), "app/a:80", "read from the cache");
    let (t, _) = build_cached(&snap(versioned("2", "b")), &mut cache);
    assert_eq!(backend(&t), "app/b:80", "a new version is read again");
    let (_, outcomes) = build_cached(&Snapshot::default(), &mut cache);
    assert!(outcomes.is_empty() && cache.0.is_empty(), "deleted routes leave the cache");
}

/// A self-signed CA certificate, PEM.
fn test_ca() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

/// ConfigMap `app/{name}` with `pem` as its `ca.crt`.
fn ca_config_map(name: &str, pem: &str) -> Arc<k8s_openapi::api::core::v1::ConfigMap> {
    Arc::new(k8s_openapi::api::core::v1::ConfigMap {
        metadata: meta("app", name),
        data: Some([("ca.crt".to_string(), pem.to_string())].into()),
        ..Default::default()
    })
}

#[test]
fn backend_tls_policies_bind_endpoints_or_make_them_unreachable() {
    let ca = test_ca();
    let cm = ca_config_map;
    let policy = |ca_name: &str| {
        let spec: crate::tls::BackendTlsPolicySpec = serde_yaml::from_str(&format!(
            "targetRefs: [{{group: \"\", kind: Service, name: echo}}]\nvalidation:\n  caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca_name}}}]\n  hostname: echo.app\n"
        ))
        .unwrap();
        let mut p = BackendTLSPolicy::new("echo-tls", spec);
        p.metadata = meta("app", "echo-tls");
        Arc::new(p)
    };
    let snap = |ca_name: &str| Snapshot {
        routes: vec![route("app", "r", 1, to("echo", None, 443))],
        services: vec![service("app", "echo", &[(443, Some("grpc"))])],
        slices: vec![slice("app", "echo", Some("grpc"), 8443, &[("10.0.0.1", Some(true), None)])],
        tls_policies: vec![policy(ca_name)],
        config_maps: vec![cm("echo-ca", &ca)],
        ..Default::default()
    };
    let built = build_full(&snap("echo-ca"), &mut RouteCache::default());
    assert_eq!(endpoints(&built.table), ["10.0.0.1:8443"]);
    let tls = &built.backend_tls[&EndpointAddr::Socket("10.0.0.1:8443".parse().unwrap())];
    assert_eq!(tls.settings.server_name, "echo.app");
    assert_eq!(built.policies[0].targets[0].accepted, Ok(()));

    let built = build_full(&snap("missing"), &mut RouteCache::default());
    assert!(built.backend_tls.is_empty());
    assert_eq!(endpoints(&built.table)[0], "unresolved: BackendTLSPolicy app/echo-tls: caCertificateRef ConfigMap missing: missing, or no PEM certificate under ca.crt");
    let report = built.outcomes[0].report.as_ref().unwrap();
    assert_eq!(report.unresolved[0].reason, UnresolvedReason::InvalidBackendTlsPolicy);
}

#[test]
fn one_address_is_reached_one_way_and_status_goes_to_policies_of_used_services() {
    let ca = test_ca();
    let policy = |name: &str, svc: &str| {
        let spec: crate::tls::BackendTlsPolicySpec = serde_yaml::from_str(&format!(
            "targetRefs: [{{group: \"\", kind: Service, name: {svc}}}]\nvalidation:\n  caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: ca}}]\n  hostname: {svc}.app\n"
        ))
        .unwrap();
        let mut p = BackendTLSPolicy::new(name, spec);
        p.metadata = meta("app", name);
        Arc::new(p)
    };
    let spec = |svc: &str, method: &str| json!({"rules": [{"matches": [{"method": {"service": "a.B", "method": method}}], "backendRefs": [{"name": svc, "port": 443}]}]});
    // `plain` and `tls` share a pod address; only `tls` has a policy. `idle` has one but no route uses it.
    let snap = Snapshot {
        routes: vec![route("app", "first", 1, spec("tls", "X")), route("app", "second", 2, spec("plain", "Y"))],
        services: ["tls", "plain", "idle"].iter().map(|s| service("app", s, &[(443, Some("grpc"))])).collect(),
        slices: ["tls", "plain"]
            .iter()
            .map(|s| slice("app", s, Some("grpc"), 8443, &[("10.0.0.1", Some(true), None)]))
            .collect(),
        tls_policies: vec![policy("tls-p", "tls"), policy("idle-p", "idle")],
        config_maps: vec![ca_config_map("ca", &ca)],
        ..Default::default()
    };
    let built = build_full(&snap, &mut RouteCache::default());
    assert_eq!(built.backend_tls.len(), 1, "the older route's Service binds the address over TLS");
    let second = built.outcomes.iter().find(|o| o.id.name == "second").unwrap().report.as_ref().unwrap();
    assert_eq!(second.unresolved[0].reason, UnresolvedReason::InvalidBackendTlsPolicy, "{second:?}");
    assert!(second.unresolved[0].message.contains("10.0.0.1:8443"), "{second:?}");
    let targets = |name: &str| built.policies.iter().find(|p| p.name == name).unwrap().targets.len();
    assert_eq!((targets("tls-p"), targets("idle-p")), (1, 0), "no status for a Service no route uses");
}
