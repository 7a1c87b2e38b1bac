//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules: every replica serves traffic;
//! only the leader writes status.
//!
//! - A lease held by another replica expires by *observed* time: it is free once its record has not changed
//!   for `leaseDurationSeconds` on our own clock, whatever its `renewTime` says (clocks of nodes disagree).
//! - Every API call has a deadline; a leader that could not renew within `renew_deadline` steps down, before
//!   another replica can take the lease over (`renew_deadline < duration`).
//! - On shutdown the leader releases the lease (empty holder, 1 s duration), so a successor takes over at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::proxy::Shutdown;

/// Where the Lease lives, who we are, and client-go's three durations.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a claim lasts without renewal (client-go's LeaseDuration, default 15 s).
    pub duration: Duration,
    /// How long a leader keeps trying to renew before it steps down (RenewDeadline, default 10 s).
    pub renew_deadline: Duration,
    /// How often the leader renews and others retry (RetryPeriod, default 2 s); also each call's deadline.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What we last saw of the Lease, and when (on our clock) it last changed.
#[derive(Clone, Debug)]
pub struct Observed {
    record: Record,
    at: Instant,
}

/// The fields of a Lease that make up client-go's LeaderElectionRecord.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    duration: Duration,
    renewed: Option<MicroTime>,
    acquired: Option<MicroTime>,
    transitions: i32,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
            renewed: spec.renew_time,
            acquired: spec.acquire_time,
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// Whether `identity` may take or renew the lease now, given what was observed: pure, for testing.
/// A lease another replica holds is free once its record has not changed for its duration on our clock.
pub fn can_acquire(observed: Option<&Observed>, identity: &str, now: Instant) -> bool {
    let Some(o) = observed else { return true };
    o.record.holder.is_empty() || o.record.holder == identity || o.at + o.record.duration <= now
}

/// Remembers the lease's record, restarting the clock only when the record changed.
fn observe(previous: Option<Observed>, spec: Option<&LeaseSpec>, now: Instant) -> Observed {
    let record = Record::of(spec);
    match previous {
        Some(p) if p.record == record => p,
        _ => Observed { record, at: now },
    }
}

/// Keeps trying to hold the Lease and publishes whether we lead (waking receivers only on a change). On
/// shutdown, releases the lease if we hold it, then returns.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut observed: Option<Observed> = None;
    let mut last_renewal: Option<Instant> = None;
    let mut stop = std::pin::pin!(shutdown.clone().into_wait());
    loop {
        let attempt = try_acquire_or_renew(&api, &config, &mut observed);
        let leading = tokio::select! {
            r = attempt => match r {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    last_renewal = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(lease = %config.name, error = %e, "lease update failed");
                    // A leader keeps leading through failed renewals until the renew deadline.
                    last_renewal.is_some_and(|t| t.elapsed() < config.renew_deadline)
                }
            },
            _ = &mut stop => break,
        };
        if leader.send_if_modified(|l| std::mem::replace(l, leading) != leading) {
            tracing::info!(identity = %config.identity, leading, "leadership changed");
            metrics.leader.set(i64::from(leading));
        }
        if !leading {
            last_renewal = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_every) => {}
            _ = &mut stop => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        metrics.leader.set(0);
        match release(&api, &config, observed.as_ref()).await {
            Ok(()) => tracing::info!(lease = %config.name, "lease released"),
            Err(e) => tracing::warn!(lease = %config.name, error = %e, "lease not released; it expires by itself"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Deadline(Duration),
}

/// One API call under the retry period as its deadline, so a hung connection cannot keep a stale leader.
async fn call<T>(deadline: Duration, f: impl Future<Output = Result<T, kube::Error>>) -> Result<T, LeaseError> {
    match tokio::time::timeout(deadline, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LeaseError::Deadline(deadline)),
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    c: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, LeaseError> {
    let deadline = c.renew_every.max(Duration::from_secs(1));
    let current = call(deadline, api.get_opt(&c.name)).await?;
    let now = Instant::now();
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    *observed = Some(observe(observed.take(), spec, now));
    if current.is_some() && !can_acquire(observed.as_ref(), &c.identity, now) {
        return Ok(false);
    }
    let was_ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(c.identity.as_str());
    let wall = k8s_openapi::jiff::Timestamp::now();
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let new_spec = LeaseSpec {
        holder_identity: Some(c.identity.clone()),
        lease_duration_seconds: Some(c.duration.as_secs().max(1) as i32),
        renew_time: Some(MicroTime(wall)),
        acquire_time: if was_ours { spec.and_then(|s| s.acquire_time.clone()) } else { Some(MicroTime(wall)) },
        lease_transitions: Some(if was_ours || spec.is_none() { transitions } else { transitions + 1 }),
        ..Default::default()
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(c.name.clone()), ..Default::default() },
                spec: Some(new_spec.clone()),
            };
            call(deadline, api.create(&PostParams::default(), &lease)).await
        }
        Some(mut lease) => {
            // Replacing with the resourceVersion we read: if another replica got there first, we get 409.
            lease.spec = Some(new_spec.clone());
            call(deadline, api.replace(&c.name, &PostParams::default(), &lease)).await
        }
    };
    match result {
        Ok(_) => {
            *observed = Some(Observed { record: Record::of(Some(&new_spec)), at: Instant::now() });
            Ok(true)
        }
        Err(LeaseError::Api(kube::Error::Api(e))) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// client-go's release: holder emptied, duration 1 s, transitions kept.
async fn release(api: &Api<Lease>, c: &LeaseConfig, observed: Option<&Observed>) -> Result<(), LeaseError> {
    let deadline = c.renew_every.max(Duration::from_secs(1));
    let Some(mut lease) = call(deadline, api.get_opt(&c.name)).await? else { return Ok(()) };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(c.identity.as_str()) {
        return Ok(());
    }
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    *spec = LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        renew_time: Some(now.clone()),
        acquire_time: Some(now),
        lease_transitions: observed.map(|o| o.record.transitions).or(spec.lease_transitions),
        ..Default::default()
    };
    call(deadline, api.replace(&c.name, &PostParams::default(), &lease)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_is_measured_on_our_clock_from_the_last_change_we_saw() {
        let t0 = Instant::now();
        let s = |i| t0 + Duration::from_secs(i);
        assert!(can_acquire(None, "me", t0), "no lease yet");
        // A renewTime far in the past (the holder's clock is behind ours) does not make a live lease free.
        let o = observe(None, Some(&spec("other", 0, 15)), s(0));
        assert!(!can_acquire(Some(&o), "me", s(1)), "just seen: held");
        assert!(!can_acquire(Some(&o), "me", s(14)), "within the duration: held");
        assert!(can_acquire(Some(&o), "me", s(15)), "unchanged for the duration: expired");
        // A renewal (the record changed) restarts the clock, whatever its timestamps.
        let renewed = observe(Some(o.clone()), Some(&spec("other", 1, 15)), s(10));
        assert!(!can_acquire(Some(&renewed), "me", s(20)), "renewed at 10 s: held until 25 s");
        let same = observe(Some(o), Some(&spec("other", 0, 15)), s(10));
        assert!(can_acquire(Some(&same), "me", s(15)), "the same record again does not restart the clock");
        assert!(can_acquire(Some(&observe(None, Some(&spec("me", 0, 15)), s(0))), "me", s(1)), "ours: renew");
        assert!(can_acquire(Some(&observe(None, Some(&spec("", 0, 1)), s(0))), "me", s(0)), "released");
    }
}
