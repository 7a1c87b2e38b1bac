use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

use super::*;
use crate::tls::BackendTlsPolicySpec;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some("shop".into()), name: Some(name.into()), ..Default::default() }
}

pub fn ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

fn config_map(name: &str, ca: &str) -> Arc<ConfigMap> {
    let data = BTreeMap::from([(CA_KEY.to_string(), ca.to_string())]);
    Arc::new(ConfigMap { metadata: meta(name), data: Some(data), ..Default::default() })
}

fn service(name: &str, ports: &[(i32, &str)]) -> Arc<Service> {
    let ports = ports.iter().map(|(p, n)| ServicePort { port: *p, name: Some(n.to_string()), ..Default::default() });
    Arc::new(Service {
        metadata: meta(name),
        spec: Some(ServiceSpec { ports: Some(ports.collect()), ..Default::default() }),
        ..Default::default()
    })
}

fn policy(name: &str, created: i64, yaml: &str) -> Arc<BackendTLSPolicy> {
    let spec: BackendTlsPolicySpec = serde_yaml::from_str(yaml).unwrap();
    let mut p = BackendTLSPolicy::new(name, spec);
    p.metadata = meta(name);
    p.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(created).unwrap()));
    Arc::new(p)
}

fn targeting(target: &str, ca: &str, hostname: &str) -> String {
    format!(
        "targetRefs: [{target}]\nvalidation:\n  caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n  hostname: {hostname}\n"
    )
}

fn server_name(index: &TlsIndex, svc: &str, port: Option<&str>) -> Option<Result<String, String>> {
    index.lookup("shop", svc, port).map(|r| r.as_ref().map(|t| t.settings.server_name.clone()).map_err(Clone::clone))
}

/// The index of `policies` with one ConfigMap `ca` holding a CA.
fn with_one_ca(policies: &[Arc<BackendTLSPolicy>], services: &[Arc<Service>]) -> (TlsIndex, Vec<PolicyOutcome>) {
    let cms = [config_map("ca", &ca_pem())];
    super::index(policies, &cms, services, &Platform::default(), &mut TlsCache::default())
}

#[test]
fn a_policy_for_a_port_wins_over_one_for_the_whole_service() {
    let services = [service("payments", &[(8443, "grpc"), (9443, "admin")])];
    let policies = [
        policy("whole", 10, &targeting("{group: \"\", kind: Service, name: payments}", "ca", "payments.shop")),
        policy(
            "admin",
            20,
            &targeting("{group: \"\", kind: Service, name: payments, sectionName: admin}", "ca", "admin.shop"),
        ),
    ];
    let (index, outcomes) = with_one_ca(&policies, &services);
    assert_eq!(server_name(&index, "payments", Some("grpc")), Some(Ok("payments.shop".into())));
    assert_eq!(server_name(&index, "payments", Some("admin")), Some(Ok("admin.shop".into())));
    assert_eq!(server_name(&index, "ledger", None), None, "no policy: cleartext");
    assert!(
        outcomes.iter().all(|o| o.targets.iter().all(|t| t.accepted.is_ok() && t.resolved_refs.is_ok())),
        "{outcomes:?}"
    );
}

#[test]
fn the_older_policy_wins_and_the_newer_is_conflicted() {
    let services = [service("payments", &[(8443, "grpc")])];
    let target = "{group: \"\", kind: Service, name: payments}";
    let policies = [
        policy("newer", 20, &targeting(target, "ca", "new.shop")),
        policy("older", 10, &targeting(target, "ca", "old.shop")),
    ];
    let (index, outcomes) = with_one_ca(&policies, &services);
    assert_eq!(server_name(&index, "payments", Some("grpc")), Some(Ok("old.shop".into())));
    let newer = outcomes.iter().find(|o| o.name == "newer").unwrap();
    let (reason, message) = newer.targets[0].accepted.as_ref().unwrap_err();
    assert_eq!(*reason, "Conflicted");
    assert!(message.contains("older"), "{message}");
}

#[test]
fn unusable_policies_make_their_services_unreachable_not_cleartext() {
    let services = [service("a", &[(1, "grpc")]), service("b", &[(1, "grpc")]), service("c", &[(1, "grpc")])];
    let svc = |n: &str| format!("{{group: \"\", kind: Service, name: {n}}}");
    let policies = [
        policy("missing-cm", 1, &targeting(&svc("a"), "nope", "a.shop")),
        policy("not-pem", 2, &targeting(&svc("b"), "junk", "b.shop")),
        policy("bad-der", 3, &targeting(&svc("c"), "bad", "c.shop")),
        policy("no-service", 4, &targeting(&svc("ghost"), "ca", "g.shop")),
        policy("no-port", 5, &targeting("{group: \"\", kind: Service, name: a, sectionName: admin}", "ca", "a.shop")),
    ];
    let cms = [
        config_map("ca", &ca_pem()),
        config_map("junk", "not a certificate"),
        config_map("bad", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    ];
    let (index, outcomes) = super::index(&policies, &cms, &services, &Platform::default(), &mut TlsCache::default());
    let verdicts = |name: &str| {
        let t = &outcomes.iter().find(|o| o.name == name).unwrap().targets[0];
        (t.accepted.as_ref().err().map(|e| e.0), t.resolved_refs.as_ref().err().map(|e| e.0))
    };
    assert_eq!(verdicts("missing-cm"), (Some("NoValidCACertificate"), Some("InvalidCACertificateRef")));
    assert_eq!(verdicts("not-pem"), (Some("NoValidCACertificate"), Some("InvalidCACertificateRef")));
    assert_eq!(verdicts("bad-der"), (Some("NoValidCACertificate"), Some("InvalidCACertificateRef")));
    assert_eq!(verdicts("no-service"), (Some("TargetNotFound"), None));
    assert_eq!(verdicts("no-port"), (Some("TargetNotFound"), None));
    for svc in ["a", "b", "c"] {
        let why = server_name(&index, svc, Some("grpc")).unwrap().unwrap_err();
        assert!(why.contains("BackendTLSPolicy shop/"), "{why}");
    }
}

#[test]
fn rebuilds_reuse_tls_configurations() {
    let services = [service("payments", &[(8443, "grpc")])];
    let policies = [policy("p", 1, &targeting("{group: \"\", kind: Service, name: payments}", "ca", "p.shop"))];
    let cms = [config_map("ca", &ca_pem())];
    let mut cache = TlsCache::default();
    let get = |i: &TlsIndex| i.lookup("shop", "payments", None).unwrap().clone().unwrap();
    let first = get(&super::index(&policies, &cms, &services, &Platform::default(), &mut cache).0);
    let second = get(&super::index(&policies, &cms, &services, &Platform::default(), &mut cache).0);
    assert!(Arc::ptr_eq(&first, &second));
    let rotated =
        get(&super::index(&policies, &[config_map("ca", &ca_pem())], &services, &Platform::default(), &mut cache).0);
    assert!(!Arc::ptr_eq(&first, &rotated), "a new CA is a new configuration");
}

#[test]
fn well_known_system_cas_come_from_the_platform_bundle() {
    let services = [service("payments", &[(443, "grpc")])];
    let yaml = "targetRefs: [{group: \"\", kind: Service, name: payments}]\nvalidation:\n  wellKnownCACertificates: System\n  hostname: payments.example.com\n";
    let policies = [policy("p", 1, yaml)];
    let system = Pem::new("/etc/ssl/certs/ca-certificates.crt", ca_pem().into_bytes());
    let (index, outcomes) = super::index(
        &policies,
        &[],
        &services,
        &Platform { system_ca: Some(&system), ..Default::default() },
        &mut TlsCache::default(),
    );
    let tls = index.lookup("shop", "payments", Some("grpc")).unwrap().as_ref().unwrap();
    assert_eq!(tls.settings.ca.origin, "/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(outcomes[0].targets[0].accepted, Ok(()));

    let (index, outcomes) = super::index(&policies, &[], &services, &Platform::default(), &mut TlsCache::default());
    assert!(index.lookup("shop", "payments", None).unwrap().is_err(), "no bundle: no cleartext either");
    assert_eq!(outcomes[0].targets[0].accepted.as_ref().unwrap_err().0, "Invalid");
}
