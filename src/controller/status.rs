//! GrpcRoute status conditions, computed purely from what the table builder reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::index::RouteOutcome;
use crate::crd::GrpcRouteStatus;

/// Condition type: the route is valid and served.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: every backendRef resolved.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Reason for an invalid route.
pub const REASON_UNSUPPORTED_VALUE: &str = "UnsupportedValue";

/// The status a route should have. `previous` keeps `lastTransitionTime` for conditions whose status did not
/// change, so that an unchanged route computes an identical status (and is not written again).
pub fn compute(outcome: &RouteOutcome, previous: Option<&GrpcRouteStatus>, now: &Time) -> GrpcRouteStatus {
    let g = outcome.generation;
    let (accepted, resolved) = match &outcome.report {
        Err(e) => (
            cond(ACCEPTED, false, REASON_UNSUPPORTED_VALUE, e, g),
            cond(RESOLVED_REFS, false, REASON_UNSUPPORTED_VALUE, "the route could not be read", g),
        ),
        Ok(r) => {
            let accepted = match &r.accepted {
                Ok(()) => cond(ACCEPTED, true, ACCEPTED, "route accepted and served", g),
                Err(e) => cond(ACCEPTED, false, REASON_UNSUPPORTED_VALUE, e, g),
            };
            let resolved = match r.unresolved.first() {
                None => cond(RESOLVED_REFS, true, RESOLVED_REFS, "all backendRefs resolved", g),
                Some(first) => {
                    let all: Vec<&str> = r.unresolved.iter().map(|u| u.message.as_str()).collect();
                    cond(RESOLVED_REFS, false, first.reason.as_str(), &all.join("; "), g)
                }
            };
            (accepted, resolved)
        }
    };
    let conditions = [accepted, resolved]
        .into_iter()
        .map(|mut c| {
            let before = previous.and_then(|p| p.conditions.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => b.last_transition_time.clone(),
                _ => now.clone(),
            };
            c
        })
        .collect();
    GrpcRouteStatus { conditions, observed_generation: g, rule_count: Some(outcome.rules as i64) }
}

/// Whether the route is valid (Accepted=True).
pub fn is_accepted(status: &GrpcRouteStatus) -> bool {
    status.conditions.iter().any(|c| c.type_ == ACCEPTED && c.status == "True")
}

fn cond(type_: &str, ok: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: generation,
        last_transition_time: Time(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{RouteId, RouteReport, Unresolved, UnresolvedReason};

    fn outcome(report: Result<RouteReport, String>) -> RouteOutcome {
        RouteOutcome { id: RouteId { namespace: "ns".into(), name: "r".into() }, generation: Some(3), report, rules: 2 }
    }

    fn report(accepted: Result<(), String>, unresolved: Vec<Unresolved>) -> RouteReport {
        RouteReport { id: RouteId { namespace: "ns".into(), name: "r".into() }, accepted, unresolved }
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn accepted_and_resolved() {
        let s = compute(&outcome(Ok(report(Ok(()), vec![]))), None, &t(10));
        assert!(is_accepted(&s));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[1].reason, "ResolvedRefs");
        assert_eq!(s.conditions[0].observed_generation, Some(3));
        assert_eq!(s.rule_count, Some(2));
    }

    #[test]
    fn unresolved_refs_name_the_first_reason_and_list_all() {
        let u = vec![
            Unresolved { reason: UnresolvedReason::RefNotPermitted, message: "a refused".into() },
            Unresolved { reason: UnresolvedReason::BackendNotFound, message: "b missing".into() },
        ];
        let s = compute(&outcome(Ok(report(Ok(()), u))), None, &t(10));
        assert!(is_accepted(&s), "unresolved refs do not un-accept a route");
        assert_eq!(s.conditions[1].status, "False");
        assert_eq!(s.conditions[1].reason, "RefNotPermitted");
        assert_eq!(s.conditions[1].message, "a refused; b missing");
    }

    #[test]
    fn invalid_and_unreadable_routes_are_not_accepted() {
        let s = compute(&outcome(Ok(report(Err("rule #0: bad regex".into()), vec![]))), None, &t(1));
        assert!(!is_accepted(&s));
        assert_eq!(s.conditions[0].reason, "UnsupportedValue");
        let s = compute(&outcome(Err("invalid GrpcRoute: spec.rules: invalid type".into())), None, &t(1));
        assert!(!is_accepted(&s));
        assert!(s.conditions[0].message.contains("invalid type"));
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let o = outcome(Ok(report(Ok(()), vec![])));
        let first = compute(&o, None, &t(10));
        let again = compute(&o, Some(&first), &t(20));
        assert_eq!(first, again, "unchanged route, identical status: nothing to write");
        let broken = outcome(Ok(report(Err("x".into()), vec![])));
        let changed = compute(&broken, Some(&first), &t(30));
        assert_eq!(changed.conditions[0].last_transition_time, t(30));
        assert_eq!(changed.conditions[1].last_transition_time, t(10));
    }
}
