//! Writes BackendTLSPolicy status: one ancestor entry per targeted Service, with `Accepted` and
//! `ResolvedRefs`, under switchboard's controller name. `status.ancestors` is an atomic list that other
//! controllers write too, so each write reads the stored list, replaces only our entries and sends the whole
//! list back with the resourceVersion it read (a conflict is retried on the next pass). Only on the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

#[cfg(test)]
use super::backend_tls::TargetOutcome;
use super::backend_tls::{PolicyOutcome, Verdict};
use super::writer::{truncate, warning, Retries};
use super::TlsSlot;
use crate::metrics::Metrics;
use crate::proxy::Shutdown;
use crate::tls::BackendTLSPolicy;

/// The `controllerName` of switchboard's ancestor entries.
pub const CONTROLLER_NAME: &str = "switchboard.dev/grpc-router";

/// The Gateway API allows 16 ancestor entries per policy; beyond that none may be added.
const MAX_ANCESTORS: usize = 16;

/// What the policy status writer needs from the controller.
pub struct PolicyWriter {
    /// Client for status patches.
    pub client: Client,
    /// Where Events go (a policy that is not accepted gets a Warning).
    pub recorder: Recorder,
    /// The policy stores, once watched: the status as stored now.
    pub stores: TlsSlot,
    /// Counters for writes.
    pub metrics: Metrics,
    /// How often every policy is checked again.
    pub resync: Duration,
}

impl PolicyWriter {
    /// Runs until shutdown: after each new build, leadership change, due retry or resync.
    pub async fn run(
        self,
        mut outcomes: watch::Receiver<Arc<Vec<PolicyOutcome>>>,
        mut leader: watch::Receiver<bool>,
        shutdown: Shutdown,
    ) {
        let mut stop = std::pin::pin!(shutdown.into_wait());
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What we wrote onto which resourceVersion (a pass before our write's watch event must not repeat it),
        // and the rejection each policy was last given an Event for.
        let mut written: HashMap<(String, String), (String, Vec<Value>)> = HashMap::new();
        let mut evented: HashMap<(String, String), String> = HashMap::new();
        let mut retries = Retries::new();
        loop {
            let leading = *leader.borrow_and_update();
            if leading {
                let latest = outcomes.borrow_and_update().clone();
                for outcome in latest.iter() {
                    let id = (outcome.namespace.clone(), outcome.name.clone());
                    if retries.waiting(&id) {
                        continue;
                    }
                    match self.reconcile(outcome, &mut written, &mut evented).await {
                        Ok(()) => retries.succeeded(&id),
                        Err(e) => {
                            let backoff = retries.failed(id);
                            tracing::warn!(policy = %format!("{}/{}", outcome.namespace, outcome.name), error = %e, retry_in = ?backoff, "BackendTLSPolicy status write failed");
                        }
                    }
                }
                let live: std::collections::HashSet<_> =
                    latest.iter().map(|o| (o.namespace.clone(), o.name.clone())).collect();
                written.retain(|k, _| live.contains(k));
                evented.retain(|k, _| live.contains(k));
                retries.retain(|k| live.contains(k));
            }
            let next_retry = retries.next(leading);
            tokio::select! {
                r = outcomes.changed() => if r.is_err() { return },
                r = leader.changed() => if r.is_err() { return },
                _ = resync.tick() => {}
                _ = super::writer::sleep_until(next_retry) => {}
                _ = &mut stop => return,
            }
        }
    }

    async fn reconcile(
        &self,
        outcome: &PolicyOutcome,
        written: &mut HashMap<(String, String), (String, Vec<Value>)>,
        evented: &mut HashMap<(String, String), String>,
    ) -> Result<(), kube::Error> {
        let stored = {
            let slot = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            let key = ObjectRef::<BackendTLSPolicy>::new(&outcome.name).within(&outcome.namespace);
            slot.as_ref().and_then(|s| s.policies.iter().find_map(|p| p.get(&key)))
        };
        let Some(policy) = stored else { return Ok(()) };
        // The outcome was built from an older spec than the store holds: the next build has the new one.
        if policy.metadata.generation != outcome.generation {
            return Ok(());
        }
        let previous = policy.status.as_ref().map(|s| s.ancestors.as_slice()).unwrap_or_default();
        let next = ancestors(outcome, previous, &super::writer::now().0.to_string());
        let id = (outcome.namespace.clone(), outcome.name.clone());
        let version = policy.resource_version().unwrap_or_default();
        // What we wrote onto this version is not written again, even if a transition time computed a second
        // later differs.
        let pending = written.get(&id).is_some_and(|(v, a)| *v == version && untimed(a) == untimed(&next));
        if previous != next.as_slice() && !pending {
            let api = Api::<BackendTLSPolicy>::namespaced(self.client.clone(), &outcome.namespace);
            let patch = json!({ "metadata": { "resourceVersion": version }, "status": { "ancestors": next } });
            let result = api.patch_status(&outcome.name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            let label = if result.is_ok() { "ok" } else { "error" };
            self.metrics.status_writes.with_label_values(&[label]).inc();
            result?;
            written.insert(id.clone(), (version, next));
        }
        let rejection =
            outcome.targets.iter().find_map(|t| t.accepted.as_ref().err().or(t.resolved_refs.as_ref().err()));
        let Some((reason, message)) = rejection else {
            evented.remove(&id);
            return Ok(());
        };
        let note = format!("{reason}: {message}");
        if evented.get(&id) == Some(&note) {
            return Ok(());
        }
        tracing::error!(policy = %format!("{}/{}", id.0, id.1), error = %note, "BackendTLSPolicy not usable");
        match self.recorder.publish(&warning("BackendTLSPolicyRejected", &note), &policy.object_ref(&())).await {
            Ok(()) => {
                evented.insert(id, note);
            }
            Err(e) => tracing::warn!(error = %e, "event not recorded"),
        }
        Ok(())
    }
}

/// The ancestor list to store: other controllers' entries as they are, then ours, one per targeted Service
/// (at most 16 in all). A condition whose status did not change keeps its `lastTransitionTime`.
pub fn ancestors(outcome: &PolicyOutcome, stored: &[Value], now: &str) -> Vec<Value> {
    let ours = |a: &Value| a.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut list: Vec<Value> = stored.iter().filter(|a| !ours(a)).cloned().collect();
    for target in &outcome.targets {
        if list.len() >= MAX_ANCESTORS {
            break;
        }
        let mut ancestor_ref = json!({ "group": "", "kind": "Service", "name": target.service });
        if let Some(port) = &target.port {
            ancestor_ref["sectionName"] = json!(port);
        }
        let previous = stored.iter().find(|a| ours(a) && a.get("ancestorRef") == Some(&ancestor_ref));
        let conditions: Vec<Value> =
            [("Accepted", &target.accepted, "Accepted"), ("ResolvedRefs", &target.resolved_refs, "ResolvedRefs")]
                .into_iter()
                .map(|(kind, verdict, ok_reason)| {
                    condition(kind, verdict, ok_reason, outcome.generation, previous, now)
                })
                .collect();
        list.push(json!({ "ancestorRef": ancestor_ref, "controllerName": CONTROLLER_NAME, "conditions": conditions }));
    }
    list
}

/// Ancestor entries without their conditions' `lastTransitionTime`.
fn untimed(ancestors: &[Value]) -> Vec<Value> {
    let mut out = ancestors.to_vec();
    for a in &mut out {
        for c in a.get_mut("conditions").and_then(Value::as_array_mut).into_iter().flatten() {
            c.as_object_mut().map(|c| c.remove("lastTransitionTime"));
        }
    }
    out
}

fn condition(
    kind: &str,
    verdict: &Verdict,
    ok_reason: &str,
    generation: Option<i64>,
    previous: Option<&Value>,
    now: &str,
) -> Value {
    let (status, reason, message) = match verdict {
        Ok(()) => ("True", ok_reason, String::new()),
        Err((reason, message)) => ("False", *reason, message.clone()),
    };
    let message = if message.is_empty() { format!("{kind} by switchboard") } else { truncate(&message, 32768) };
    let old = previous.and_then(|p| {
        p.get("conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    });
    let since = match old {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {
            c.get("lastTransitionTime").and_then(Value::as_str).unwrap_or(now).to_string()
        }
        _ => now.to_string(),
    };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation.unwrap_or(0),
        "lastTransitionTime": since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine(service: &str) -> TargetOutcome {
        TargetOutcome { service: service.into(), port: None, accepted: Ok(()), resolved_refs: Ok(()) }
    }

    fn outcome(targets: Vec<TargetOutcome>) -> PolicyOutcome {
        PolicyOutcome { namespace: "shop".into(), name: "p".into(), generation: Some(3), targets }
    }

    #[test]
    fn other_controllers_entries_are_kept_and_ours_replaced() {
        let theirs = json!({"ancestorRef": {"name": "gw"}, "controllerName": "example.com/gw", "conditions": []});
        let stale_ours = json!({"ancestorRef": {"group": "", "kind": "Service", "name": "gone"}, "controllerName": CONTROLLER_NAME, "conditions": []});
        let next = ancestors(&outcome(vec![fine("payments")]), &[theirs.clone(), stale_ours], "2026-01-01T00:00:00Z");
        assert_eq!(next.len(), 2);
        assert_eq!(next[0], theirs);
        assert_eq!(next[1]["ancestorRef"]["name"], "payments");
        let conditions = next[1]["conditions"].as_array().unwrap();
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[1]["reason"], "ResolvedRefs");
        assert_eq!(conditions[0]["observedGeneration"], 3);
    }

    #[test]
    fn transition_times_move_only_when_the_status_does() {
        let first = ancestors(&outcome(vec![fine("payments")]), &[], "T1");
        let same = ancestors(&outcome(vec![fine("payments")]), &first, "T2");
        assert_eq!(first, same, "nothing changed: nothing to write");
        let bad = TargetOutcome {
            accepted: Err(("NoValidCACertificate", "ConfigMap ca: missing".into())),
            ..fine("payments")
        };
        let changed = ancestors(&outcome(vec![bad]), &first, "T3");
        assert_eq!(changed[0]["conditions"][0]["lastTransitionTime"], "T3");
        assert_eq!(changed[0]["conditions"][0]["status"], "False");
        assert_eq!(changed[0]["conditions"][1]["lastTransitionTime"], "T1", "ResolvedRefs stayed True");
    }

    #[test]
    fn a_full_list_gets_no_more_entries() {
        let theirs: Vec<Value> =
            (0..16).map(|i| json!({"ancestorRef": {"name": format!("gw{i}")}, "controllerName": "x/y"})).collect();
        assert_eq!(ancestors(&outcome(vec![fine("payments")]), &theirs, "T"), theirs);
    }
}
