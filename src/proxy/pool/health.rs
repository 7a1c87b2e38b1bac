//! Passive health of one endpoint, readable by the picker without a lock: whether connects are backing off
//! after failures, and whether the endpoint is ejected as an outlier (after Envoy's outlier detection:
//! consecutive gateway failures eject it for a time that doubles with each ejection, and a cap keeps most of
//! a backend in service).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Outlier detection settings.
#[derive(Clone, Debug)]
pub struct OutlierSettings {
    /// Consecutive gateway failures (connect failures, lost connections, HTTP 502/503/504) that eject an
    /// endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one doubles it.
    pub base_ejection_time: Duration,
    /// The longest ejection.
    pub max_ejection_time: Duration,
    /// Most endpoints of one backend ejected at once, in percent; one may always be.
    pub max_ejection_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Milliseconds on a process-wide monotonic clock, never 0 (0 stands for "not set").
pub(super) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What the picker and the forwarder know of an endpoint's health.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Until when connects are backing off (`now_ms` time); 0 when they are not.
    backoff_until: AtomicU64,
    /// Until when the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// When the last ejection ended; 0 before any.
    returned_at: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row (without a healthy spell of a base ejection time in between).
    ejections: AtomicU32,
}

impl Health {
    /// Neither backing off nor ejected.
    pub(super) fn available(&self) -> bool {
        let (backoff, ejected) =
            (self.backoff_until.load(Ordering::Relaxed), self.ejected_until.load(Ordering::Relaxed));
        if backoff == 0 && ejected == 0 {
            return true;
        }
        let now = now_ms();
        now >= backoff && now >= ejected
    }

    pub(super) fn backing_off_until(&self, until: Option<u64>) {
        self.backoff_until.store(until.unwrap_or(0), Ordering::Relaxed);
    }

    pub(super) fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// The endpoint answered: its run of failures ends, and after a healthy spell its ejections are forgotten.
    pub(super) fn success(&self, settings: &OutlierSettings) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let returned = self.returned_at.load(Ordering::Relaxed);
        if returned != 0 && now_ms().saturating_sub(returned) >= settings.base_ejection_time.as_millis() as u64 {
            self.ejections.store(0, Ordering::Relaxed);
            self.returned_at.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a gateway failure. Returns how long to eject the endpoint for when this failure ejects it;
    /// `ejected_peers` counts the backend's endpoints ejected now, of `peers` in all.
    pub(super) fn failure(
        &self,
        settings: &OutlierSettings,
        ejected_peers: impl FnOnce(u64) -> usize,
        peers: usize,
    ) -> Option<Duration> {
        if settings.consecutive_failures == 0 {
            return None;
        }
        let now = now_ms();
        // Failures while ejected come from calls that had nowhere else to go: they start no new run.
        if self.is_ejected(now) {
            return None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < settings.consecutive_failures || peers < 2 {
            return None;
        }
        let allowed = (peers * settings.max_ejection_percent as usize / 100).max(1);
        if ejected_peers(now) >= allowed {
            return None;
        }
        let previous = self.ejections.load(Ordering::Relaxed);
        let time = settings.base_ejection_time.saturating_mul(1 << previous.min(16)).min(settings.max_ejection_time);
        let until = now + time.as_millis() as u64;
        // One failure ejects; others that raced with it see the endpoint ejected already.
        let current = self.ejected_until.load(Ordering::Relaxed);
        if current > now
            || self.ejected_until.compare_exchange(current, until, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return None;
        }
        self.ejections.store(previous + 1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Some(time)
    }

    /// The ejection that `failure` started is over.
    pub(super) fn end_ejection(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
        self.returned_at.store(now_ms(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_with_doubling_time() {
        let (h, s) = (Health::default(), settings());
        assert!(h.available());
        assert_eq!(h.failure(&s, |_| 0, 4), None);
        h.success(&s);
        assert_eq!(h.failure(&s, |_| 0, 4), None);
        assert_eq!(h.failure(&s, |_| 0, 4), None, "a success broke the run");
        assert_eq!(h.failure(&s, |_| 0, 4), Some(Duration::from_secs(10)));
        assert!(!h.available());
        assert_eq!(h.failure(&s, |_| 0, 4), None, "already ejected");
        h.end_ejection();
        assert!(h.available());
        for _ in 0..2 {
            assert_eq!(h.failure(&s, |_| 0, 4), None);
        }
        assert_eq!(h.failure(&s, |_| 0, 4), Some(Duration::from_secs(20)), "doubled");
        h.end_ejection();
        for _ in 0..2 {
            h.failure(&s, |_| 0, 4);
        }
        assert_eq!(h.failure(&s, |_| 0, 4), Some(Duration::from_secs(25)), "capped");
    }

    #[test]
    fn the_cap_keeps_most_of_a_backend_in_service() {
        let s = OutlierSettings { consecutive_failures: 1, ..settings() };
        let h = Health::default();
        assert_eq!(h.failure(&s, |_| 1, 2), None, "50% of 2: one is ejected already");
        assert_eq!(h.failure(&s, |_| 1, 4), Some(Duration::from_secs(10)), "50% of 4 allows two");
        let lone = Health::default();
        assert_eq!(lone.failure(&s, |_| 0, 1), None, "a lone endpoint has nowhere to fail over to");
        let few = Health::default();
        let s10 = OutlierSettings { max_ejection_percent: 10, ..s };
        assert!(few.failure(&s10, |_| 0, 3).is_some(), "one endpoint may always be ejected");
        let off = Health::default();
        assert_eq!(off.failure(&OutlierSettings { consecutive_failures: 0, ..settings() }, |_| 0, 5), None);
    }

    #[test]
    fn backoff_makes_the_endpoint_unavailable_until_it_passes() {
        let h = Health::default();
        h.backing_off_until(Some(now_ms() + 60_000));
        assert!(!h.available());
        h.backing_off_until(Some(now_ms().saturating_sub(1)));
        assert!(h.available());
        h.backing_off_until(None);
        assert!(h.available());
    }
}
