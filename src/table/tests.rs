//! Precedence and matching tests of the whole table (GRPCRoute semantics).

use http::HeaderMap;

use super::*;
use crate::crd::*;

struct Names;
impl Resolve<String> for Names {
    fn resolve(&self, _: &RouteId, b: &BackendObjectRef) -> Result<Backend<String>, Unresolved> {
        if b.name == "missing" {
            return Err(Unresolved { reason: UnresolvedReason::BackendNotFound, message: "no such service".into() });
        }
        Ok(Backend { name: b.name.as_str().into(), endpoints: vec![b.name.clone()] })
    }
}
impl Load for String {
    fn load(&self) -> usize {
        0
    }
}

fn mm(service: Option<&str>, method: Option<&str>, headers: &[(&str, &str)]) -> GrpcRouteMatch {
    GrpcRouteMatch {
        method: (service.is_some() || method.is_some()).then(|| GrpcMethodMatch {
            match_type: MatchType::Exact,
            service: service.map(Into::into),
            method: method.map(Into::into),
        }),
        headers: headers
            .iter()
            .map(|(n, v)| GrpcHeaderMatch { match_type: MatchType::Exact, name: n.to_string(), value: v.to_string() })
            .collect(),
    }
}

fn rule(backend: &str, matches: Vec<GrpcRouteMatch>) -> GrpcRouteRule {
    GrpcRouteRule {
        matches,
        backend_refs: vec![GrpcBackendRef {
            backend: BackendObjectRef { name: backend.into(), ..Default::default() },
            weight: None,
        }],
        ..Default::default()
    }
}

fn spec(hostnames: &[&str], rules: Vec<GrpcRouteRule>) -> GrpcRouteSpec {
    GrpcRouteSpec { hostnames: hostnames.iter().map(|h| h.to_string()).collect(), rules }
}

fn table(routes: &[(&str, GrpcRouteSpec)]) -> (Table<String>, Vec<RouteReport>) {
    let ids: Vec<RouteId> =
        routes.iter().map(|(n, _)| RouteId { namespace: "ns".into(), name: n.to_string() }).collect();
    let inputs: Vec<RouteInput<'_>> = routes.iter().zip(&ids).map(|((_, s), id)| RouteInput { id, spec: s }).collect();
    let out = build(&inputs, &Names);
    (out.table, out.reports)
}

fn route_for(t: &Table<String>, authority: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    t.lookup(&CallInfo { authority, path, headers: &h }).map(|r| match r.backends.pick() {
        Pick::Endpoint(b, _) => b.name.to_string(),
        other => format!("{other:?}"),
    })
}

#[test]
fn no_matches_matches_every_call_and_no_route_is_none() {
    let (t, _) = table(&[("all", spec(&[], vec![rule("catchall", vec![])]))]);
    assert_eq!(route_for(&t, "", "/any.Svc/Any", &[]).as_deref(), Some("catchall"));
    let (t, _) = table(&[("one", spec(&[], vec![rule("a", vec![mm(Some("a.A"), None, &[])])]))]);
    assert_eq!(route_for(&t, "", "/b.B/X", &[]), None);
}

#[test]
fn exact_hostname_beats_wildcard_beats_longer_wildcard_order() {
    let (t, _) = table(&[
        ("any", spec(&[], vec![rule("any", vec![])])),
        ("short-wild", spec(&["*.com"], vec![rule("short-wild", vec![])])),
        ("wild", spec(&["*.example.com"], vec![rule("wild", vec![])])),
        ("exact", spec(&["api.example.com"], vec![rule("exact", vec![])])),
    ]);
    assert_eq!(route_for(&t, "api.example.com:443", "/a.B/C", &[]).as_deref(), Some("exact"));
    assert_eq!(route_for(&t, "web.example.com", "/a.B/C", &[]).as_deref(), Some("wild"));
    assert_eq!(route_for(&t, "other.com", "/a.B/C", &[]).as_deref(), Some("short-wild"));
    assert_eq!(route_for(&t, "localhost", "/a.B/C", &[]).as_deref(), Some("any"));
    assert_eq!(route_for(&t, "API.EXAMPLE.COM", "/a.B/C", &[]).as_deref(), Some("exact"), "hosts are case-insensitive");
}

#[test]
fn hostname_beats_method_specificity() {
    let (t, _) = table(&[
        ("method", spec(&[], vec![rule("method", vec![mm(Some("a.B"), Some("C"), &[])])])),
        ("host", spec(&["x.io"], vec![rule("host", vec![])])),
    ]);
    assert_eq!(route_for(&t, "x.io", "/a.B/C", &[]).as_deref(), Some("host"));
    assert_eq!(route_for(&t, "y.io", "/a.B/C", &[]).as_deref(), Some("method"));
}

#[test]
fn service_chars_then_method_chars_then_header_count() {
    let (t, _) = table(&[
        ("method-only", spec(&[], vec![rule("method-only", vec![mm(None, Some("Get"), &[])])])),
        ("service", spec(&[], vec![rule("service", vec![mm(Some("pkg.Svc"), None, &[])])])),
        ("both", spec(&[], vec![rule("both", vec![mm(Some("pkg.Svc"), Some("Get"), &[])])])),
        ("both+header", spec(&[], vec![rule("both+header", vec![mm(Some("pkg.Svc"), Some("Get"), &[("x-v", "2")])])])),
    ]);
    assert_eq!(route_for(&t, "", "/pkg.Svc/Get", &[("x-v", "2")]).as_deref(), Some("both+header"));
    assert_eq!(route_for(&t, "", "/pkg.Svc/Get", &[]).as_deref(), Some("both"));
    assert_eq!(route_for(&t, "", "/pkg.Svc/List", &[]).as_deref(), Some("service"));
    assert_eq!(route_for(&t, "", "/other.Svc/Get", &[]).as_deref(), Some("method-only"));
    // A longer service name wins over a shorter one with a method.
    let (t, _) = table(&[
        ("short", spec(&[], vec![rule("short", vec![mm(Some("a.S"), None, &[]), mm(None, Some("Get"), &[])])])),
        ("long", spec(&[], vec![rule("long", vec![mm(None, Some("Get"), &[])])])),
    ]);
    assert_eq!(route_for(&t, "", "/a.S/Get", &[]).as_deref(), Some("short"));
}

#[test]
fn ties_go_to_the_older_route_then_rule_order() {
    let same = || vec![mm(Some("a.B"), None, &[])];
    let (t, _) = table(&[
        ("older", spec(&[], vec![rule("older-first", same()), rule("older-second", same())])),
        ("newer", spec(&[], vec![rule("newer", same())])),
    ]);
    assert_eq!(route_for(&t, "", "/a.B/C", &[]).as_deref(), Some("older-first"));
}

#[test]
fn matches_are_ored_and_parts_anded() {
    let (t, _) = table(&[(
        "r",
        spec(&[], vec![rule("r", vec![mm(Some("a.A"), None, &[("x-env", "canary")]), mm(Some("b.B"), None, &[])])]),
    )]);
    assert_eq!(route_for(&t, "", "/a.A/M", &[("x-env", "canary")]).as_deref(), Some("r"));
    assert_eq!(route_for(&t, "", "/a.A/M", &[("x-env", "prod")]), None, "header part must match too");
    assert_eq!(route_for(&t, "", "/b.B/M", &[]).as_deref(), Some("r"));
}

#[test]
fn invalid_route_is_rejected_and_others_keep_serving() {
    let mut bad = rule("bad", vec![GrpcRouteMatch { method: Some(GrpcMethodMatch::default()), headers: vec![] }]);
    bad.timeout = Some("soon".into());
    let (t, reports) = table(&[("bad", spec(&[], vec![bad])), ("good", spec(&[], vec![rule("good", vec![])]))]);
    assert!(reports[0].accepted.as_ref().unwrap_err().contains("service or method"));
    assert!(reports[1].accepted.is_ok());
    assert_eq!(route_for(&t, "", "/a.B/C", &[]).as_deref(), Some("good"));
}

#[test]
fn zero_timeout_is_rejected() {
    let mut r = rule("instant", vec![]);
    r.timeout = Some("0ms".into());
    let (_, reports) = table(&[("r", spec(&[], vec![r]))]);
    assert!(reports[0].accepted.as_ref().unwrap_err().contains("timeout must be greater than zero"), "{reports:?}");
}

#[test]
fn header_checks_the_api_server_leaves_to_us_reject_the_route_and_others_keep_serving() {
    let modifier = |m: HeaderModifier| GrpcRouteFilter {
        filter_type: FilterType::RequestHeaderModifier,
        request_header_modifier: Some(m),
        response_header_modifier: None,
        request_mirror: None,
    };
    let header = |name: &str| HttpHeader { name: name.into(), value: "v".into() };
    let twice = rule("twice", vec![mm(Some("a.A"), None, &[("x-b", "1"), ("X-Env", "1"), ("x-env", "2")])]);
    let mut both = rule("both", vec![mm(Some("a.A"), None, &[])]);
    both.name = Some("edit".into());
    both.filters =
        vec![modifier(HeaderModifier { set: vec![header("x-a")], remove: vec!["X-A".into()], ..Default::default() })];
    let mut hop = rule("hop", vec![mm(Some("a.A"), None, &[])]);
    hop.filters = vec![modifier(HeaderModifier { add: vec![header("Keep-Alive")], ..Default::default() })];
    let (t, reports) = table(&[
        ("twice", spec(&[], vec![twice])),
        ("both", spec(&[], vec![both])),
        ("hop", spec(&[], vec![hop])),
        ("good", spec(&[], vec![rule("good", vec![])])),
    ]);
    let rejected: Vec<_> = reports.iter().map(|r| r.accepted.clone().err().unwrap_or_default()).collect();
    assert_eq!(
        rejected,
        [
            r#"rule #0: match #0: headers "X-Env" and "x-env" name the same header (header names are case-insensitive)"#,
            r#"rule "edit": RequestHeaderModifier: header "X-A" is in both set and remove: a header name may appear in only one of set, add and remove"#,
            r#"rule #0: RequestHeaderModifier: header "Keep-Alive" cannot be modified: connection-specific headers are not allowed in HTTP/2 (RFC 9113 §8.2.2)"#,
            "",
        ]
    );
    assert_eq!(route_for(&t, "", "/a.A/M", &[("x-env", "1"), ("x-b", "1")]).as_deref(), Some("good"));
}

#[test]
fn unresolved_backend_keeps_its_share() {
    let mut r = rule("ok", vec![]);
    r.backend_refs.push(GrpcBackendRef {
        backend: BackendObjectRef { name: "missing".into(), ..Default::default() },
        weight: Some(1),
    });
    let (t, reports) = table(&[("r", spec(&[], vec![r]))]);
    assert_eq!(reports[0].unresolved[0].reason, UnresolvedReason::BackendNotFound);
    let rule = t.lookup(&CallInfo { authority: "", path: "/a.B/C", headers: &HeaderMap::new() }).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let unresolved =
        (0..10_000).filter(|_| matches!(rule.backends.pick_with(|n| rng.u64(0..n)), Pick::Unresolved { .. })).count();
    assert!((4_500..5_500).contains(&unresolved), "{unresolved}");
}

#[test]
fn explain_lists_winner_and_losers_with_reasons() {
    let (t, _) = table(&[
        ("a", spec(&[], vec![rule("a", vec![mm(Some("x.X"), None, &[])])])),
        ("b", spec(&[], vec![rule("b", vec![])])),
        ("c", spec(&["only.io"], vec![rule("c", vec![])])),
        ("d", spec(&[], vec![rule("d", vec![mm(Some("x.X"), None, &[("x-h", "1")])])])),
    ]);
    let h = HeaderMap::new();
    let lines = t.explain(&CallInfo { authority: "other.io", path: "/x.X/M", headers: &h });
    let v: Vec<(String, Verdict)> = lines.iter().map(|l| (l.rule.route.name.clone(), l.verdict.clone())).collect();
    assert_eq!(
        v,
        [
            ("c".to_string(), Verdict::HostnameMismatch),
            ("d".to_string(), Verdict::HeaderMismatch("x-h".into())),
            ("a".to_string(), Verdict::Winner),
            ("b".to_string(), Verdict::Outranked),
        ]
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h30m").unwrap(), std::time::Duration::from_secs(5400));
    assert_eq!(parse_duration("250ms").unwrap(), std::time::Duration::from_millis(250));
    assert!(parse_duration("1.5s").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("1s1s1s1s1s").is_err());
}

#[test]
fn retry_budgets_survive_rebuilds_of_the_same_policy() {
    let with_retry = |percent: u32| {
        let mut r = rule("a", vec![]);
        r.retry = Some(RetryPolicy {
            codes: vec!["UNAVAILABLE".into()],
            budget_percent: Some(percent),
            min_retries_per_second: Some(0),
            ..Default::default()
        });
        table(&[("r", spec(&[], vec![r]))]).0
    };
    let old = with_retry(10);
    let budget = old.rules()[0].retry.as_ref().unwrap();
    (0..100).for_each(|_| budget.record_call());
    assert_eq!((0..20).filter(|_| budget.try_spend()).count(), 10, "10% of 100 calls, all spent");

    // Endpoint churn rebuilds the table: the spent budget carries over.
    let mut same = with_retry(10);
    same.inherit_retries(&old);
    assert!(!same.rules()[0].retry.as_ref().unwrap().try_spend(), "a rebuild must not refill the budget");
    // A changed policy starts afresh.
    let mut changed = with_retry(50);
    changed.inherit_retries(&old);
    let fresh = changed.rules()[0].retry.as_ref().unwrap();
    (0..10).for_each(|_| fresh.record_call());
    assert!(fresh.try_spend());
}
