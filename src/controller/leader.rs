//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves traffic; only the leader writes
//! status.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a leader's claim lasts without renewal.
    pub duration: Duration,
    /// How often the leader renews (and others retry).
    pub renew_every: Duration,
}

/// Whether this replica holds the Lease, given its current state: pure, for testing.
pub fn can_acquire(spec: Option<&LeaseSpec>, identity: &str, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let (Some(renewed), Some(secs)) = (spec.renew_time.as_ref(), spec.lease_duration_seconds) else { return true };
    let expires = renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs));
    expires < now
}

/// Keeps trying to hold the Lease; publishes whether we lead. Runs until the sender's receivers are gone.
pub async fn run(client: Client, config: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut tick = tokio::time::interval(config.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leading = match try_acquire(&api, &config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "lease update failed");
                false
            }
        };
        if *leader.borrow() != leading {
            tracing::info!(identity = %config.identity, leading, "leadership changed");
        }
        leader.send_replace(leading);
        if leader.is_closed() {
            return;
        }
    }
}

async fn try_acquire(api: &Api<Lease>, c: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let current = api.get_opt(&c.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    if !can_acquire(spec, &c.identity, now) {
        return Ok(false);
    }
    let was_ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(c.identity.as_str());
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let new_spec = LeaseSpec {
        holder_identity: Some(c.identity.clone()),
        lease_duration_seconds: Some(c.duration.as_secs().max(1) as i32),
        renew_time: Some(MicroTime(now)),
        acquire_time: if was_ours { spec.and_then(|s| s.acquire_time.clone()) } else { Some(MicroTime(now)) },
        lease_transitions: Some(if was_ours || spec.is_none() { transitions } else { transitions + 1 }),
        ..Default::default()
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(c.name.clone()), ..Default::default() },
                spec: Some(new_spec),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            // Replacing with the resourceVersion we read: if another replica got there first, we get 409.
            lease.spec = Some(new_spec);
            api.replace(&c.name, &PostParams::default(), &lease).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn spec(holder: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn lease_rules() {
        let now = Timestamp::from_second(100).unwrap();
        assert!(can_acquire(None, "me", now), "no lease yet");
        assert!(can_acquire(Some(&spec("me", 99, 15)), "me", now), "ours: renew");
        assert!(!can_acquire(Some(&spec("other", 95, 15)), "me", now), "held by a live leader");
        assert!(can_acquire(Some(&spec("other", 80, 15)), "me", now), "expired");
        assert!(can_acquire(Some(&spec("", 99, 15)), "me", now), "released");
    }
}
