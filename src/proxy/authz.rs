//! Per-rule allow-lists of client identities (a rule's `clientIdentities`): which rules admit only some
//! clients, read from the routes and bound to a table's rules once, so a call checks one map entry.

use std::collections::HashMap;
use std::sync::Arc;

use crate::crd::GrpcRouteSpec;
use crate::table::RouteId;
use crate::tls::ClientIdentity;

use super::status::Error;

/// The allow-lists of the rules that have one, by route and rule index.
#[derive(Clone, Debug, Default)]
pub struct RuleIdentities(HashMap<(RouteId, usize), Arc<[String]>>);

impl RuleIdentities {
    /// The allow-lists of `routes`' rules.
    pub fn from_specs<'a>(routes: impl IntoIterator<Item = (&'a RouteId, &'a GrpcRouteSpec)>) -> Self {
        let mut out = HashMap::new();
        for (id, spec) in routes {
            for (index, rule) in spec.rules.iter().enumerate() {
                if let Some(allowed) = &rule.client_identities {
                    out.insert((id.clone(), index), allowed.as_slice().into());
                }
            }
        }
        Self(out)
    }

    /// The allow-list of a route's rule, if it has one.
    pub fn get(&self, route: &RouteId, index: usize) -> Option<&Arc<[String]>> {
        self.0.get(&(route.clone(), index))
    }

    /// Whether no rule has an allow-list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether the client of a call may use a rule whose allow-list is `allowed`.
pub fn check(
    allowed: &[String],
    identity: Option<&ClientIdentity>,
    rule: impl FnOnce() -> String,
) -> Result<(), Error> {
    match identity {
        Some(id) if id.is_any_of(allowed) => Ok(()),
        Some(id) => Err(Error::PermissionDenied { rule: rule(), presented: id.describe() }),
        None => Err(Error::PermissionDenied { rule: rule(), presented: "no client certificate".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::SubjectAltName;

    #[test]
    fn lists_are_found_by_route_and_rule() {
        let spec: GrpcRouteSpec = serde_yaml::from_str(
            "rules:\n  - backendRefs: [{name: a, port: 1}]\n  - clientIdentities: [spiffe://td/web]\n    backendRefs: [{name: b, port: 1}]\n",
        )
        .unwrap();
        let id = RouteId { namespace: "default".into(), name: "r".into() };
        let ids = RuleIdentities::from_specs([(&id, &spec)]);
        assert!(ids.get(&id, 0).is_none());
        assert_eq!(ids.get(&id, 1).map(|l| l.to_vec()), Some(vec!["spiffe://td/web".to_string()]));
    }

    #[test]
    fn only_listed_identities_pass() {
        let allowed = ["spiffe://td/web".to_string()];
        let web = ClientIdentity { names: vec![SubjectAltName::Uri("spiffe://td/web".into())] };
        let other = ClientIdentity { names: vec![SubjectAltName::Dns("other.example".into())] };
        assert!(check(&allowed, Some(&web), || "r".into()).is_ok());
        let e = check(&allowed, Some(&other), || "default/r rule #1".into()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("dns:other.example") && e.to_string().contains("default/r rule #1"), "{e}");
        let e = check(&allowed, None, || "r".into()).unwrap_err();
        assert!(e.to_string().contains("no client certificate"), "{e}");
        assert!(check(&[], Some(&web), || "r".into()).is_err(), "an empty list admits nobody");
    }
}
