//! Writes GrpcRoute status and Events, in a task of its own so that a slow or failing API server never holds
//! up a table rebuild. It writes what the latest build says, only while leading, only where the stored
//! status differs; a failed write is retried per route with exponential back-off, and every route is checked
//! again each resync period (a status someone else overwrote is put back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio::time::Instant;

use super::index::RouteOutcome;
use super::status;
use crate::crd::{GrpcRoute, GrpcRouteStatus};
use crate::metrics::Metrics;
use crate::proxy::Shutdown;
use crate::table::RouteId;

/// The API server refuses Event notes over 1 KiB.
pub const MAX_EVENT_NOTE: usize = 1024;

/// First retry of a failed write; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the writer needs from the controller.
pub struct Writer {
    /// Client for status patches.
    pub client: Client,
    /// Field manager of the server-side apply patches.
    pub field_manager: String,
    /// Where Events go.
    pub recorder: Recorder,
    /// The GrpcRoute stores (one per watched scope): the status as stored now.
    pub routes: Vec<Store<DynamicObject>>,
    /// Counters for writes.
    pub metrics: Metrics,
    /// How often every route is checked again, changed or not.
    pub resync: Duration,
}

/// A status this writer wrote, onto which version of the route.
struct Written {
    version: String,
    status: GrpcRouteStatus,
}

/// Failed writes per object, and when each may be tried again: the back-off doubles from [`FIRST_BACKOFF`]
/// up to [`MAX_BACKOFF`].
pub(super) struct Retries<K>(HashMap<K, (u32, Instant)>);

impl<K: Eq + std::hash::Hash> Retries<K> {
    pub(super) fn new() -> Self {
        Self(HashMap::new())
    }

    /// Whether `key` failed and its back-off has not run out.
    pub(super) fn waiting(&self, key: &K) -> bool {
        self.0.get(key).is_some_and(|(_, at)| *at > Instant::now())
    }

    pub(super) fn succeeded(&mut self, key: &K) {
        self.0.remove(key);
    }

    /// Counts a failure of `key`; returns how long until it is tried again.
    pub(super) fn failed(&mut self, key: K) -> Duration {
        let (failures, at) = self.0.entry(key).or_insert((0, Instant::now()));
        *failures += 1;
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (*failures).min(10)).min(MAX_BACKOFF);
        *at = Instant::now() + backoff;
        backoff
    }

    pub(super) fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.0.retain(|k, _| keep(k));
    }

    /// When the next retry is due, while `leading`: a former leader would otherwise wake at once, forever.
    pub(super) fn next(&self, leading: bool) -> Option<Instant> {
        leading.then(|| self.0.values().map(|(_, at)| *at).min()).flatten()
    }
}

impl Writer {
    /// Runs until shutdown: after each new build, GrpcRoute event (a status someone else wrote), leadership
    /// change, due retry or resync.
    pub async fn run(
        self,
        mut outcomes: watch::Receiver<Arc<Vec<RouteOutcome>>>,
        mut leader: watch::Receiver<bool>,
        routes_changed: Arc<tokio::sync::Notify>,
        shutdown: Shutdown,
    ) {
        let ar = ApiResource::erase::<GrpcRoute>(&());
        let mut retries = Retries::new();
        let mut evented: HashMap<RouteId, String> = HashMap::new();
        let mut written: HashMap<RouteId, Written> = HashMap::new();
        let mut stop = std::pin::pin!(shutdown.into_wait());
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *leader.borrow_and_update() {
                let latest = outcomes.borrow_and_update().clone();
                for outcome in latest.iter() {
                    if retries.waiting(&outcome.id) {
                        continue;
                    }
                    match self.reconcile(&ar, outcome, &mut evented, &mut written).await {
                        Ok(()) => retries.succeeded(&outcome.id),
                        Err(e) => {
                            let backoff = retries.failed(outcome.id.clone());
                            tracing::warn!(route = %outcome.id, error = %e, retry_in = ?backoff, "status write failed");
                        }
                    }
                }
                let live: std::collections::HashSet<&RouteId> = latest.iter().map(|o| &o.id).collect();
                retries.retain(|id| live.contains(id));
                evented.retain(|id, _| live.contains(id));
                written.retain(|id, _| live.contains(id));
            }
            let next_retry = retries.next(*leader.borrow());
            tokio::select! {
                r = outcomes.changed() => if r.is_err() { return },
                r = leader.changed() => if r.is_err() { return },
                _ = routes_changed.notified() => {}
                _ = resync.tick() => {}
                _ = sleep_until(next_retry) => {}
                _ = &mut stop => return,
            }
        }
    }

    /// Brings one route's stored status to what the build says; records an Event when it becomes rejected.
    async fn reconcile(
        &self,
        ar: &ApiResource,
        outcome: &RouteOutcome,
        evented: &mut HashMap<RouteId, String>,
        written: &mut HashMap<RouteId, Written>,
    ) -> Result<(), kube::Error> {
        let key = ObjectRef::new_with(&outcome.id.name, ar.clone()).within(&outcome.id.namespace);
        let Some(obj) = self.routes.iter().find_map(|s| s.get(&key)) else { return Ok(()) };
        let previous: Option<GrpcRouteStatus> =
            obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
        let next = status::compute(outcome, previous.as_ref(), &now());
        let version = obj.metadata.resource_version.clone().unwrap_or_default();
        // A pass that runs before our last write's watch event arrived sees the old status: what we wrote
        // onto this same version is not written again.
        let pending = written.get(&outcome.id).is_some_and(|w| w.version == version && w.status == next);
        if previous.as_ref() != Some(&next) && !pending {
            let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), &outcome.id.namespace, ar);
            let patch =
                serde_json::json!({ "apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute", "status": next });
            let params = PatchParams::apply(&self.field_manager).force();
            let written_now = api.patch_status(&outcome.id.name, &params, &Patch::Apply(&patch)).await;
            let label = if written_now.is_ok() { "ok" } else { "error" };
            self.metrics.status_writes.with_label_values(&[label]).inc();
            written_now?;
            written.insert(outcome.id.clone(), Written { version, status: next.clone() });
            tracing::debug!(route = %outcome.id, "status written");
        }
        if status::is_accepted(&next) {
            evented.remove(&outcome.id);
            return Ok(());
        }
        // One Event per rejection: not again for the same message, nor for a rejection already in the stored
        // status (written before this replica started).
        let message = next.conditions.first().map(|c| c.message.clone()).unwrap_or_default();
        let stored_same = previous
            .as_ref()
            .is_some_and(|p| !status::is_accepted(p) && p.conditions.first().is_some_and(|c| c.message == message));
        if stored_same || evented.get(&outcome.id) == Some(&message) {
            evented.entry(outcome.id.clone()).or_insert(message);
            return Ok(());
        }
        tracing::error!(route = %outcome.id, error = %message, "route rejected");
        match self.recorder.publish(&warning("RouteRejected", &message), &obj.object_ref(ar)).await {
            Ok(()) => {
                evented.insert(outcome.id.clone(), message);
            }
            Err(e) => tracing::warn!(route = %outcome.id, error = %e, "event not recorded"),
        }
        Ok(())
    }
}

/// Now, to the second: stored times have second precision, so an unchanged status computes identical.
pub(super) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Sleeps until `at`, or forever.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A `Warning` Event about an object switchboard cannot use, its note cut to the API server's limit.
pub fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(truncate(note, MAX_EVENT_NOTE)),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// At most `max` bytes, cut at a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max - ellipsis.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_servers_limit() {
        assert_eq!(truncate("short", MAX_EVENT_NOTE), "short");
        let long = "é".repeat(2000);
        let t = truncate(&long, MAX_EVENT_NOTE);
        assert!(t.len() <= MAX_EVENT_NOTE && t.ends_with('…'), "{}", t.len());
        assert!(t.len() > MAX_EVENT_NOTE - 4);
    }
}
