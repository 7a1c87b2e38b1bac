//! The route table: an immutable, pure (no I/O) value that answers "which rule serves this call".
//!
//! A [`Table`] is built from GrpcRoutes by [`build`] and swapped into the data plane as a whole; calls in
//! flight keep the table they started with. Matching follows the Gateway API GRPCRoute precedence:
//! longest non-wildcard hostname, longest hostname, most service characters, most method characters, most
//! header matches, then the oldest route, then `namespace/name`, then rule order.
//!
//! The table is generic over the endpoint type `E`: the builder produces addresses, and the data plane maps
//! them to its connection pools once per table, so a lookup never consults a shared registry.

mod balance;
mod build;
mod edits;
mod matching;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

pub use self::balance::{Backend, Load, Pick, Target, WeightedBackends};
pub use self::build::{
    build, parse_duration, ref_name, BuildOutput, EndpointAddr, Resolve, RouteInput, RouteReport, Unresolved,
    UnresolvedReason,
};
pub use self::edits::HeaderEdits;
pub use self::matching::{split_path, HeaderMatch, HostMatch, MethodMatch};
pub use self::retry::{parse_code, Retry};

/// The identity of a route: `namespace/name` (standalone routes use the namespace `default`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    /// Namespace of the GrpcRoute.
    pub namespace: String,
    /// Name of the GrpcRoute.
    pub name: String,
}

impl std::fmt::Display for RouteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the data plane does with a call that matched a rule.
#[derive(Debug)]
pub struct Rule<E> {
    /// The route the rule belongs to.
    pub route: Arc<RouteId>,
    /// Index of the rule in the route's `rules`.
    pub index: usize,
    /// The rule's name, if it has one.
    pub name: Option<String>,
    /// Where calls go.
    pub backends: WeightedBackends<E>,
    /// Edits to request headers before forwarding.
    pub request_headers: HeaderEdits,
    /// Edits to response headers before relaying.
    pub response_headers: HeaderEdits,
    /// Backends that receive a copy of each call.
    pub mirrors: Vec<Backend<E>>,
    /// Cap on the call's duration.
    pub timeout: Option<Duration>,
    /// Retries of unary calls, shared by all calls of this rule (its budget counts them).
    pub retry: Option<Arc<Retry>>,
}

impl<E> Rule<E> {
    /// `namespace/name` and the rule (its name, or its index).
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} rule {n:?}", self.route),
            None => format!("{} rule #{}", self.route, self.index),
        }
    }
}

/// A call as the matcher sees it.
#[derive(Clone, Copy, Debug)]
pub struct CallInfo<'a> {
    /// `:authority` (a port, if any, is ignored).
    pub authority: &'a str,
    /// `:path`, `/package.Service/Method`.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// One (hostname, match) of one rule, with its precedence.
#[derive(Debug)]
struct Candidate {
    host: HostMatch,
    method: MethodMatch,
    headers: Vec<HeaderMatch>,
    rule: usize,
    match_index: Option<usize>,
}

/// Why a candidate did not serve a call, as `explain` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This candidate serves the call.
    Winner,
    /// It matched, but a candidate of higher precedence did too.
    Outranked,
    /// The hostname does not match the authority.
    HostnameMismatch,
    /// The method match does not match the path.
    MethodMismatch,
    /// The named header is missing or has another value.
    HeaderMismatch(String),
}

/// One line of an explanation.
#[derive(Debug)]
pub struct Explained<'t, E> {
    /// The candidate's rule.
    pub rule: &'t Rule<E>,
    /// Which hostname of the route it is for.
    pub host: &'t HostMatch,
    /// Which match of the rule (None: the rule has no matches).
    pub match_index: Option<usize>,
    /// The outcome.
    pub verdict: Verdict,
}

/// The immutable route table.
#[derive(Debug)]
pub struct Table<E> {
    rules: Vec<Arc<Rule<E>>>,
    /// Every candidate, in precedence order.
    candidates: Vec<Candidate>,
    /// Candidates confined to one exact service, by service (indexes into `candidates`, ascending).
    by_service: HashMap<String, Vec<u32>>,
    /// All other candidates (ascending).
    generic: Vec<u32>,
}

impl<E> Default for Table<E> {
    fn default() -> Self {
        Self { rules: Vec::new(), candidates: Vec::new(), by_service: HashMap::new(), generic: Vec::new() }
    }
}

impl<E> Table<E> {
    /// The rule that serves `call`, if any.
    pub fn lookup(&self, call: &CallInfo<'_>) -> Option<&Arc<Rule<E>>> {
        let host = host_of(call.authority);
        let service = split_path(call.path).map(|(s, _)| s).unwrap_or("");
        let indexed = self.by_service.get(service).map(Vec::as_slice).unwrap_or(&[]);
        let (mut a, mut b) = (indexed.iter().peekable(), self.generic.iter().peekable());
        // Both lists ascend in precedence order: merge them and stop at the first candidate that matches.
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => return None,
            };
            let c = &self.candidates[*next.expect("peeked") as usize];
            if verdict(c, host.as_ref(), call).is_none() {
                return Some(&self.rules[c.rule]);
            }
        }
    }

    /// Every candidate in precedence order with what it made of `call` (for `switchboard explain`).
    pub fn explain<'t>(&'t self, call: &CallInfo<'_>) -> Vec<Explained<'t, E>> {
        let host = host_of(call.authority);
        let mut won = false;
        self.candidates
            .iter()
            .map(|c| {
                let verdict = match verdict(c, host.as_ref(), call) {
                    Some(v) => v,
                    None if won => Verdict::Outranked,
                    None => {
                        won = true;
                        Verdict::Winner
                    }
                };
                Explained { rule: &self.rules[c.rule], host: &c.host, match_index: c.match_index, verdict }
            })
            .collect()
    }

    /// The services (and, for exact matches, methods) the table names: the only values metrics label with.
    pub fn known_methods(&self) -> Vec<(&str, Option<&str>)> {
        let mut out: Vec<(&str, Option<&str>)> = self
            .candidates
            .iter()
            .filter_map(|c| match &c.method {
                MethodMatch::Exact { path } => split_path(path).map(|(s, m)| (s, Some(m))),
                MethodMatch::Service { prefix } => Some((&prefix[1..prefix.len() - 1], None)),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// All rules, in route order.
    pub fn rules(&self) -> &[Arc<Rule<E>>] {
        &self.rules
    }

    /// Whether the table has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Keeps the retry budgets of `old` across a rebuild: a rule of the same route and index with the same
    /// policy takes over the old rule's counters, so a table swapped in every few milliseconds (endpoint churn)
    /// cannot reset the budget and let retries through unbounded.
    pub fn inherit_retries<E2>(&mut self, old: &Table<E2>) {
        let previous: HashMap<(&RouteId, usize), &Arc<Retry>> =
            old.rules.iter().filter_map(|r| Some(((&*r.route, r.index), r.retry.as_ref()?))).collect();
        if previous.is_empty() {
            return;
        }
        for rule in &mut self.rules {
            let Some(old) = rule.retry.as_ref().and_then(|new| {
                previous.get(&(&*rule.route, rule.index)).filter(|old| old.same_policy(new)).map(|old| Arc::clone(old))
            }) else {
                continue;
            };
            // Freshly built tables own their rules; a shared one is left as it is.
            if let Some(rule) = Arc::get_mut(rule) {
                rule.retry = Some(old);
            }
        }
    }

    /// The same table with each endpoint replaced by `f(endpoint)`.
    pub fn map_endpoints<F, E2>(self, mut f: F) -> Table<E2>
    where
        F: FnMut(&E) -> E2,
    {
        let rules = self
            .rules
            .iter()
            .map(|r| {
                Arc::new(Rule {
                    route: r.route.clone(),
                    index: r.index,
                    name: r.name.clone(),
                    backends: r.backends.map(&mut f),
                    request_headers: r.request_headers.clone(),
                    response_headers: r.response_headers.clone(),
                    mirrors: r.mirrors.iter().map(|m| m.map(&mut f)).collect(),
                    timeout: r.timeout,
                    retry: r.retry.clone(),
                })
            })
            .collect();
        Table { rules, candidates: self.candidates, by_service: self.by_service, generic: self.generic }
    }
}

/// The lower-cased host of an authority, without a port.
fn host_of(authority: &str) -> Option<String> {
    if authority.is_empty() {
        return None;
    }
    let host = match authority.rfind(':') {
        Some(i) if !authority.ends_with(']') && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &authority[..i]
        }
        _ => authority,
    };
    Some(host.to_ascii_lowercase())
}

/// `None` when the candidate matches the call, else why not.
fn verdict(c: &Candidate, host: Option<&String>, call: &CallInfo<'_>) -> Option<Verdict> {
    let host_ok = match (&c.host, host) {
        (HostMatch::Any, _) => true,
        (h, Some(host)) => h.matches(host),
        (_, None) => false,
    };
    if !host_ok {
        return Some(Verdict::HostnameMismatch);
    }
    if !c.method.matches(call.path) {
        return Some(Verdict::MethodMismatch);
    }
    c.headers.iter().find(|h| !h.matches(call.headers)).map(|h| Verdict::HeaderMismatch(h.name().to_string()))
}

#[cfg(test)]
mod tests;
