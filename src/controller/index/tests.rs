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
        grants: None,
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
