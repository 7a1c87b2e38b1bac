//! Builds a [`Table`] from GrpcRoutes: a pure function of its inputs, shared by standalone mode, the
//! controller and `switchboard explain`.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Backend, Candidate, HeaderEdits, HeaderMatch, HostMatch, MethodMatch, Retry, RouteId, Rule, Table, Target,
    WeightedBackends,
};
use crate::crd::{BackendObjectRef, FilterType, GrpcRouteMatch, GrpcRouteSpec, HeaderModifier};

/// The address of one backend endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointAddr {
    /// A resolved socket address (from an EndpointSlice, or an IP literal).
    Socket(SocketAddr),
    /// A host name resolved by DNS when connecting (standalone mode).
    Host {
        /// The host name.
        host: Arc<str>,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(a) => a.fmt(f),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One route to build from. Inputs are given oldest first (ties by `namespace/name`): that order is the
/// precedence tie-breaker after specificity.
#[derive(Clone, Copy, Debug)]
pub struct RouteInput<'a> {
    /// The route's identity.
    pub id: &'a RouteId,
    /// Its spec.
    pub spec: &'a GrpcRouteSpec,
}

/// Why a backendRef could not be resolved (the Gateway API `ResolvedRefs` reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnresolvedReason {
    /// The Service does not exist.
    BackendNotFound,
    /// A cross-namespace reference that no ReferenceGrant allows.
    RefNotPermitted,
    /// The group/kind is not a core Service.
    InvalidKind,
    /// A value we do not support (e.g. a missing port).
    UnsupportedValue,
    /// The Service port speaks something gRPC cannot use (UDP, or an `appProtocol` that is not HTTP/2).
    UnsupportedProtocol,
    /// A BackendTLSPolicy targets the Service but cannot be used: calls fail rather than go out in cleartext.
    InvalidBackendTlsPolicy,
}

impl UnresolvedReason {
    /// The reason as written in status conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackendNotFound => "BackendNotFound",
            Self::RefNotPermitted => "RefNotPermitted",
            Self::InvalidKind => "InvalidKind",
            Self::UnsupportedValue => "UnsupportedValue",
            Self::UnsupportedProtocol => "UnsupportedProtocol",
            Self::InvalidBackendTlsPolicy => "InvalidBackendTLSPolicy",
        }
    }
}

/// A backendRef that could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// Condition reason.
    pub reason: UnresolvedReason,
    /// Human-readable detail.
    pub message: String,
}

/// Resolves backendRefs to endpoints: DNS names standalone, Services and EndpointSlices in a cluster.
pub trait Resolve<E> {
    /// Resolves `backend`, referenced from `route`.
    fn resolve(&self, route: &RouteId, backend: &BackendObjectRef) -> Result<Backend<E>, Unresolved>;
}

/// What the builder made of one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteReport {
    /// The route.
    pub id: RouteId,
    /// `Err(message)` when the route is invalid and was left out of the table.
    pub accepted: Result<(), String>,
    /// The backendRefs that could not be resolved (their share of calls fails with UNAVAILABLE).
    pub unresolved: Vec<Unresolved>,
}

/// A table and a report per input route, in input order.
#[derive(Debug)]
pub struct BuildOutput<E> {
    /// The new table.
    pub table: Table<E>,
    /// One report per input route.
    pub reports: Vec<RouteReport>,
}

type Key = (Reverse<(usize, usize, usize, usize, usize)>, usize, usize, usize);

/// Builds the table. Invalid routes are reported and left out; the others are served.
pub fn build<E>(routes: &[RouteInput<'_>], resolver: &impl Resolve<E>) -> BuildOutput<E> {
    let mut rules = Vec::new();
    let mut keyed: Vec<(Key, Candidate)> = Vec::new();
    let mut reports = Vec::with_capacity(routes.len());
    for (order, input) in routes.iter().enumerate() {
        let mut unresolved = Vec::new();
        match compile_route(input, resolver, &mut unresolved) {
            Ok((route_hosts, compiled)) => {
                for (rule, matches) in compiled {
                    let rule_slot = rules.len();
                    for (host, (match_index, method, headers, svc_chars, method_chars)) in
                        route_hosts.iter().flat_map(|h| matches.iter().map(move |m| (h, m)))
                    {
                        let (nonwild, host_len) = host.specificity();
                        let key = (
                            Reverse((nonwild, host_len, *svc_chars, *method_chars, headers.len())),
                            order,
                            rule.index,
                            match_index.unwrap_or(0),
                        );
                        let candidate = Candidate {
                            host: host.clone(),
                            method: method.clone(),
                            headers: headers.clone(),
                            rule: rule_slot,
                            match_index: *match_index,
                        };
                        keyed.push((key, candidate));
                    }
                    rules.push(Arc::new(rule));
                }
                reports.push(RouteReport { id: input.id.clone(), accepted: Ok(()), unresolved });
            }
            Err(message) => reports.push(RouteReport { id: input.id.clone(), accepted: Err(message), unresolved }),
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    let candidates: Vec<Candidate> = keyed.into_iter().map(|(_, c)| c).collect();
    let mut by_service: HashMap<String, Vec<u32>> = HashMap::new();
    let mut generic = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match c.method.exact_service() {
            Some(s) => by_service.entry(s.to_string()).or_default().push(i as u32),
            None => generic.push(i as u32),
        }
    }
    BuildOutput { table: Table { rules, candidates, by_service, generic }, reports }
}

/// A compiled match: (match index, method, headers, service characters, method characters).
type CompiledMatch = (Option<usize>, MethodMatch, Vec<HeaderMatch>, usize, usize);

/// A compiled route: its hostnames, and each rule with its matches.
type CompiledRoute<E> = (Vec<HostMatch>, Vec<(Rule<E>, Vec<CompiledMatch>)>);

fn hosts(spec: &GrpcRouteSpec) -> Result<Vec<HostMatch>, String> {
    if spec.hostnames.is_empty() {
        return Ok(vec![HostMatch::Any]);
    }
    spec.hostnames.iter().map(|h| HostMatch::parse(h)).collect()
}

fn compile_route<E>(
    input: &RouteInput<'_>,
    resolver: &impl Resolve<E>,
    unresolved: &mut Vec<Unresolved>,
) -> Result<CompiledRoute<E>, String> {
    let route_hosts = hosts(input.spec)?;
    let route = Arc::new(input.id.clone());
    let mut out = Vec::with_capacity(input.spec.rules.len());
    for (index, r) in input.spec.rules.iter().enumerate() {
        let at = |e: String| match &r.name {
            Some(n) => format!("rule {n:?}: {e}"),
            None => format!("rule #{index}: {e}"),
        };
        let matches = if r.matches.is_empty() {
            vec![(None, MethodMatch::Any, Vec::new(), 0, 0)]
        } else {
            r.matches
                .iter()
                .enumerate()
                .map(|(i, m)| compile_match(i, m).map_err(|e| at(format!("match #{i}: {e}"))))
                .collect::<Result<Vec<_>, String>>()?
        };
        let mut request_headers = None;
        let mut response_headers = None;
        let mut mirrors = Vec::new();
        for f in &r.filters {
            match f.filter_type {
                FilterType::RequestHeaderModifier => {
                    compile_once(&mut request_headers, f.request_header_modifier.as_ref(), "RequestHeaderModifier")
                        .map_err(at)?
                }
                FilterType::ResponseHeaderModifier => {
                    compile_once(&mut response_headers, f.response_header_modifier.as_ref(), "ResponseHeaderModifier")
                        .map_err(at)?
                }
                FilterType::RequestMirror => {
                    let m = f
                        .request_mirror
                        .as_ref()
                        .ok_or_else(|| at("RequestMirror filter needs requestMirror".into()))?;
                    match resolver.resolve(&route, &m.backend_ref) {
                        Ok(b) => mirrors.push(b),
                        Err(u) => unresolved.push(u),
                    }
                }
            }
        }
        let timeout = r.timeout.as_deref().map(parse_duration).transpose().map_err(at)?;
        if timeout == Some(Duration::ZERO) {
            return Err(at("timeout must be greater than zero".into()));
        }
        let retry = r
            .retry
            .as_ref()
            .map(|p| Retry::compile(p, p.budget_percent, p.min_retries_per_second).map(Arc::new))
            .transpose()
            .map_err(at)?;
        let backends = WeightedBackends::new(r.backend_refs.iter().map(|b| {
            let weight = b.weight.unwrap_or(1);
            let target = match resolver.resolve(&route, &b.backend) {
                Ok(backend) => Target::Backend(backend),
                Err(u) => {
                    let t = Target::Unresolved { name: ref_name(&b.backend).into(), reason: u.message.as_str().into() };
                    unresolved.push(u);
                    t
                }
            };
            (weight, target)
        }));
        let rule = Rule {
            route: route.clone(),
            index,
            name: r.name.clone(),
            backends,
            request_headers: request_headers.unwrap_or_default(),
            response_headers: response_headers.unwrap_or_default(),
            mirrors,
            timeout,
            retry,
        };
        out.push((rule, matches));
    }
    Ok((route_hosts, out))
}

/// Compiles match `index` of a rule.
fn compile_match(index: usize, m: &GrpcRouteMatch) -> Result<CompiledMatch, String> {
    let method = m.method.as_ref().map(MethodMatch::compile).transpose()?.unwrap_or(MethodMatch::Any);
    let headers = HeaderMatch::compile_all(&m.headers)?;
    let svc = m.method.as_ref().and_then(|m| m.service.as_ref()).map_or(0, String::len);
    let meth = m.method.as_ref().and_then(|m| m.method.as_ref()).map_or(0, String::len);
    Ok((Some(index), method, headers, svc, meth))
}

/// Compiles a header modifier filter into `slot`: its field must be set, and it may appear once per rule.
fn compile_once(slot: &mut Option<HeaderEdits>, modifier: Option<&HeaderModifier>, kind: &str) -> Result<(), String> {
    let field = format!("{}{}", kind[..1].to_ascii_lowercase(), &kind[1..]);
    let m = modifier.ok_or_else(|| format!("{kind} filter needs {field}"))?;
    let edits = HeaderEdits::compile(m).map_err(|e| format!("{kind}: {e}"))?;
    if slot.replace(edits).is_some() {
        return Err(format!("{kind} filter cannot be repeated"));
    }
    Ok(())
}

/// `name:port` or `namespace/name:port` as written in a backendRef.
pub fn ref_name(r: &BackendObjectRef) -> String {
    let ns = r.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    match r.port {
        Some(p) => format!("{ns}{}:{p}", r.name),
        None => format!("{ns}{}", r.name),
    }
}

/// Parses a Gateway API duration: 1 to 4 parts of `<1-5 digits>(h|m|s|ms)`, e.g. `1h30m`, `1.5s` is not allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 500ms, 10s, 1m30s)");
    let (mut rest, mut total, mut parts) = (s, Duration::ZERO, 0);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}
