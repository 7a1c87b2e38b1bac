//! From a Service and its EndpointSlices to the addresses calls may go to, read the way kube-proxy reads them:
//! the port matched by name (`""` and absent are the same name), one address family, ready endpoints first and
//! serving-but-terminating ones only when none is ready.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::table::{EndpointAddr, Unresolved, UnresolvedReason};

/// `appProtocol` values that cannot carry gRPC's HTTP/2 cleartext: the Service says its port speaks something
/// else. Any other value (`kubernetes.io/h2c`, `grpc`, `h2c`, `http2`, vendor values) is taken at its word.
const NOT_H2C: [&str; 6] = ["http", "kubernetes.io/ws", "kubernetes.io/wss", "https", "tcp", "udp"];

/// The name of the Service port `port`, if it has one.
pub fn port_name(svc: &Service, port: u16) -> Option<&str> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    ports.iter().find(|p| p.port == i32::from(port)).and_then(|p| p.name.as_deref()).filter(|n| !n.is_empty())
}

/// The endpoints of `svc` (named `what` in messages) for the Service port `port`, from `slices` (every slice
/// labelled with the Service's name, in any order). `tls`: the port is reached over TLS (a BackendTLSPolicy),
/// so an `appProtocol` of `https` is fine.
pub fn resolve(
    what: &str,
    svc: &Service,
    slices: &[&EndpointSlice],
    port: u16,
    tls: bool,
) -> Result<Vec<EndpointAddr>, Unresolved> {
    let fail = |reason, message: String| Err(Unresolved { reason, message });
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        // An ExternalName can point at any host, inside the cluster or not, bypassing ReferenceGrants
        // (CVE-2021-25740); Gateway API implementations leave it out unless asked.
        return fail(UnresolvedReason::UnsupportedValue, format!("Service {what} is of type ExternalName"));
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let service_port = ports.iter().find(|p| p.port == i32::from(port));
    let service_port = match service_port {
        Some(p) => Some(p),
        // A headless Service may declare no port at all: its endpoints take any port, the backendRef's.
        None if headless && ports.is_empty() => None,
        None => return fail(UnresolvedReason::BackendNotFound, format!("Service {what} has no port {port}")),
    };
    if let Some(p) = service_port {
        check_protocol(what, p, tls)?;
    }
    let family = address_family(svc, slices);
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let Some(target) = target_port(slice, service_port, port) else { continue };
        for ep in &slice.endpoints {
            let list = match condition(ep) {
                Condition::Ready => &mut ready,
                Condition::ServingTerminating => &mut terminating,
                Condition::Out => continue,
            };
            // The EndpointSlice API allows several addresses but consumers use the first (the field's doc).
            if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                list.push(EndpointAddr::Socket(SocketAddr::new(ip, target)));
            }
        }
    }
    // kube-proxy's rule: terminating endpoints that still serve take calls only while nothing is ready, so a
    // rollout of the last pods does not drop calls on the floor.
    let mut endpoints = if ready.is_empty() { terminating } else { ready };
    // A pod moving between slices may show in two for a moment.
    endpoints.sort();
    endpoints.dedup();
    Ok(endpoints)
}

fn check_protocol(what: &str, p: &ServicePort, tls: bool) -> Result<(), Unresolved> {
    let port = p.port;
    let protocol = p.protocol.as_deref().unwrap_or("TCP");
    if protocol != "TCP" {
        return Err(Unresolved {
            reason: UnresolvedReason::UnsupportedProtocol,
            message: format!("Service {what} port {port} is {protocol}; gRPC needs TCP"),
        });
    }
    match p.app_protocol.as_deref() {
        Some(app) if tls && app.eq_ignore_ascii_case("https") => Ok(()),
        Some(app) if NOT_H2C.iter().any(|n| n.eq_ignore_ascii_case(app)) => Err(Unresolved {
            reason: UnresolvedReason::UnsupportedProtocol,
            message: format!("Service {what} port {port} has appProtocol {app}; gRPC needs HTTP/2 (kubernetes.io/h2c)"),
        }),
        _ => Ok(()),
    }
}

/// The family calls use: the Service's primary one (`ipFamilies[0]`), else the one its cluster IP has, else
/// IPv4 when any slice has it. Dual-stack Services get a slice per family with the same pods: using one family
/// keeps every pod once.
fn address_family(svc: &Service, slices: &[&EndpointSlice]) -> &'static str {
    let spec = svc.spec.as_ref();
    let primary = spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()).map(String::as_str);
    match primary {
        Some("IPv6") => return "IPv6",
        Some("IPv4") => return "IPv4",
        _ => {}
    }
    if let Some(ip) = spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok()) {
        return if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    }
    if slices.iter().any(|s| s.address_type == "IPv4") || !slices.iter().any(|s| s.address_type == "IPv6") {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The target port this slice gives for the Service port: the slice port with the same name (the
/// EndpointSlice controller writes `name: ""` for an unnamed Service port, which has no name at all) and
/// protocol. A headless Service without ports has slices without ports: the backendRef's port is the target.
fn target_port(slice: &EndpointSlice, service_port: Option<&ServicePort>, port: u16) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let Some(sp) = service_port else { return ports.is_empty().then_some(port) };
    let name = sp.name.as_deref().unwrap_or("");
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == name && p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

enum Condition {
    Ready,
    ServingTerminating,
    Out,
}

/// The EndpointConditions as kube-proxy reads them: absent `ready` and `serving` mean true, absent
/// `terminating` false.
fn condition(ep: &Endpoint) -> Condition {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(true);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    match (ready, serving, terminating) {
        (true, _, false) => Condition::Ready,
        (_, true, true) => Condition::ServingTerminating,
        _ => Condition::Out,
    }
}
