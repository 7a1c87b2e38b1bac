//! Retry policy of a rule: which gRPC codes are retried, how many attempts, and a budget that caps retries
//! to a share of calls so that retries cannot multiply load on a struggling backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::crd::RetryPolicy;

/// A compiled retry policy, with its budget's running counters.
#[derive(Debug)]
pub struct Retry {
    /// Bit `n` set: gRPC code `n` is retried.
    codes: u32,
    /// Total attempts including the first.
    pub attempts: u32,
    budget: Budget,
}

const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Parses a gRPC code given as a number (`14`) or a name (`UNAVAILABLE`, `Unavailable`).
pub fn parse_code(s: &str) -> Result<u8, String> {
    if let Ok(n) = s.parse::<u8>() {
        if (1..=16).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase().replace('-', "_");
    let compact = |n: &str| n.replace('_', "");
    CODE_NAMES
        .iter()
        .position(|n| *n == upper || compact(n) == compact(&upper))
        .filter(|i| *i > 0)
        .map(|i| i as u8)
        .ok_or_else(|| format!("{s:?} is not a retryable gRPC status code"))
}

impl Retry {
    /// Compiles a policy: default 2 attempts; budget of `budget_percent`% of calls (default 20) with at least
    /// `min_per_second` retries a second (default 10).
    pub fn compile(p: &RetryPolicy, budget_percent: Option<u32>, min_per_second: Option<u32>) -> Result<Self, String> {
        let mut codes = 0u32;
        for c in &p.codes {
            codes |= 1 << parse_code(c)?;
        }
        if codes == 0 {
            return Err("retry needs at least one code".into());
        }
        let attempts = p.attempts.unwrap_or(2);
        if !(1..=10).contains(&attempts) {
            return Err(format!("retry attempts must be 1 to 10, got {attempts}"));
        }
        Ok(Self { codes, attempts, budget: Budget::new(budget_percent.unwrap_or(20), min_per_second.unwrap_or(10)) })
    }

    /// Whether `code` is retried.
    pub fn retries(&self, code: u8) -> bool {
        code < 32 && self.codes & (1 << code) != 0
    }

    /// Whether `other` is the same policy (codes, attempts, budget settings), so it may take over this one's
    /// budget counters when the table is rebuilt.
    pub fn same_policy(&self, other: &Retry) -> bool {
        self.codes == other.codes
            && self.attempts == other.attempts
            && self.budget.percent == other.budget.percent
            && self.budget.min_per_second == other.budget.min_per_second
    }

    /// Counts a call toward the budget.
    pub fn record_call(&self) {
        self.budget.record_call();
    }

    /// Takes one retry from the budget, if any is left.
    pub fn try_spend(&self) -> bool {
        self.budget.try_spend()
    }
}

/// Retries allowed per window: `max(percent% of calls, min_per_second × window)`.
#[derive(Debug)]
struct Budget {
    percent: u64,
    min_per_second: u64,
    epoch: Instant,
    window_start_ms: AtomicU64,
    calls: AtomicU64,
    retries: AtomicU64,
}

const WINDOW: Duration = Duration::from_secs(10);

impl Budget {
    fn new(percent: u32, min_per_second: u32) -> Self {
        Self {
            percent: u64::from(percent),
            min_per_second: u64::from(min_per_second),
            epoch: Instant::now(),
            window_start_ms: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn roll(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW.as_millis() as u64
            && self.window_start_ms.compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.calls.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn record_call(&self) {
        self.roll();
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn try_spend(&self) -> bool {
        let allowed =
            (self.calls.load(Ordering::Relaxed) * self.percent / 100).max(self.min_per_second * WINDOW.as_secs());
        self.retries.fetch_add(1, Ordering::Relaxed) < allowed || {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_number_and_name() {
        assert_eq!(parse_code("14"), Ok(14));
        assert_eq!(parse_code("UNAVAILABLE"), Ok(14));
        assert_eq!(parse_code("Unavailable"), Ok(14));
        assert_eq!(parse_code("resource-exhausted"), Ok(8));
        assert_eq!(parse_code("ResourceExhausted"), Ok(8));
        assert!(parse_code("OK").is_err());
        assert!(parse_code("0").is_err());
        assert!(parse_code("17").is_err());
        assert!(parse_code("nope").is_err());
    }

    #[test]
    fn budget_caps_retries() {
        let p = RetryPolicy { codes: vec!["UNAVAILABLE".into()], attempts: Some(3), ..Default::default() };
        let r = Retry::compile(&p, Some(10), Some(0)).unwrap();
        assert!(r.retries(14) && !r.retries(13));
        for _ in 0..100 {
            r.record_call();
        }
        let granted = (0..50).filter(|_| r.try_spend()).count();
        assert_eq!(granted, 10, "10% of 100 calls");
        assert!(r.same_policy(&Retry::compile(&p, Some(10), Some(0)).unwrap()));
        assert!(!r.same_policy(&Retry::compile(&p, Some(11), Some(0)).unwrap()));
        let floor = Retry::compile(&p, Some(0), Some(1)).unwrap();
        assert_eq!((0..50).filter(|_| floor.try_spend()).count(), 10, "1/s over a 10 s window");
    }
}
