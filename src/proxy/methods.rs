//! Per-method metric labels for service-level rules, learned from backends under a cap per service.
//!
//! A rule that matches a whole service (`{service: S}`) cannot name its methods up front, and the method
//! of a call is client input: labelling with it as sent would let any client grow the series without
//! bound. So a method earns its own `grpc_method` label only once a backend answered one of its calls with
//! anything but UNIMPLEMENTED (the method exists), and a service holds at most `cap` such methods. Until
//! a method is learned its calls count under `unknown`; once the service is full, calls of every other
//! method count under `other`. Learned methods outlive table swaps, so the cap holds for the process.
//!
//! The hot path reads a service's learned set through an `ArcSwap` and takes no lock; only learning a
//! method, at most `cap` times per service, takes that service's own mutex and copies its small set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::metrics::{MethodMetrics, Metrics, OTHER, UNKNOWN};
use crate::table::split_path;

/// Methods learned per service when nothing else is configured.
pub const DEFAULT_MAX_METHODS_PER_SERVICE: usize = 100;

/// Longer method names are never learned (no real method is this long).
const MAX_METHOD_LEN: usize = 128;

/// The learned methods of every service the tables named so far; consulted only when a table is bound.
#[derive(Debug)]
pub(super) struct Learned {
    cap: usize,
    services: Mutex<HashMap<String, Arc<ServiceMethods>>>,
}

impl Learned {
    /// Learns up to `cap` methods per service; 0 learns none (every call of a service-level rule is `unknown`).
    pub(super) fn new(cap: usize) -> Self {
        Self { cap, services: Mutex::new(HashMap::new()) }
    }

    /// The labels of `service`, shared with every table that names it.
    pub(super) fn service(&self, service: &str, metrics: &Metrics) -> Arc<ServiceMethods> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services
            .entry(service.to_string())
            .or_insert_with(|| {
                Arc::new(ServiceMethods {
                    service: service.to_string(),
                    cap: self.cap,
                    learned: ArcSwap::from_pointee(HashMap::new()),
                    unknown: metrics.method(service, UNKNOWN),
                    other: OnceLock::new(),
                    learning: Mutex::new(()),
                    metrics: metrics.clone(),
                })
            })
            .clone()
    }
}

/// One service's method labels.
#[derive(Debug)]
pub(super) struct ServiceMethods {
    service: String,
    cap: usize,
    learned: ArcSwap<HashMap<Box<str>, Arc<MethodMetrics>>>,
    unknown: Arc<MethodMetrics>,
    /// Created on first use, so a service below its cap has no `other` series.
    other: OnceLock<Arc<MethodMetrics>>,
    /// Held while a method is added.
    learning: Mutex<()>,
    metrics: Metrics,
}

impl ServiceMethods {
    /// The handles a call of `method` counts into.
    pub(super) fn label(self: &Arc<Self>, method: &str) -> CallMetrics {
        if self.cap == 0 {
            return CallMetrics::fixed(self.unknown.clone());
        }
        let learned = self.learned.load();
        if let Some(m) = learned.get(method) {
            return CallMetrics::fixed(m.clone());
        }
        if learned.len() >= self.cap {
            let other = self.other.get_or_init(|| self.metrics.method(&self.service, OTHER));
            return CallMetrics::fixed(other.clone());
        }
        CallMetrics { handles: self.unknown.clone(), learns: Some(self.clone()) }
    }

    /// Gives `method` its own label, if the service has room.
    fn learn(&self, method: &str) {
        if method.len() > MAX_METHOD_LEN {
            return;
        }
        let _only_writer = self.learning.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.learned.load();
        if current.contains_key(method) || current.len() >= self.cap {
            return;
        }
        let mut next = HashMap::clone(&current);
        next.insert(method.into(), self.metrics.method(&self.service, method));
        self.learned.store(Arc::new(next));
    }
}

/// The metric handles of one call, and whether its outcome may teach its service a method.
#[derive(Debug)]
pub struct CallMetrics {
    handles: Arc<MethodMetrics>,
    learns: Option<Arc<ServiceMethods>>,
}

impl CallMetrics {
    pub(super) fn fixed(handles: Arc<MethodMetrics>) -> Self {
        Self { handles, learns: None }
    }

    /// Whether the call's outcome may teach its service the method (see [`CallMetrics::finish`]).
    pub fn learns(&self) -> bool {
        self.learns.is_some()
    }

    /// A call started.
    pub fn start(&self) {
        self.handles.start();
    }

    /// A call ended with `code`. `answered_path` is the call's path when a backend gave it a gRPC answer:
    /// then any code but UNIMPLEMENTED shows the method exists, and later calls of it get its label.
    pub fn finish(&self, code: u8, elapsed: Duration, received: u64, sent: u64, answered_path: Option<&str>) {
        self.handles.finish(code, elapsed, received, sent);
        if let (Some(service), Some(path)) = (&self.learns, answered_path) {
            if code != tonic::Code::Unimplemented as u8 {
                if let Some((_, method)) = split_path(path) {
                    service.learn(method);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(metrics: &Metrics, service: &str) -> Vec<String> {
        let prefix = "grpc_server_started_total{grpc_method=\"";
        let mut out: Vec<String> = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("grpc_service=\"{service}\"")))
            .map(|l| l[prefix.len()..].split('"').next().unwrap_or_default().to_string())
            .collect();
        out.sort();
        out
    }

    fn call(s: &Arc<ServiceMethods>, method: &str, code: tonic::Code, answered: bool) {
        let m = s.label(method);
        m.start();
        let path = format!("/svc.S/{method}");
        m.finish(code as u8, Duration::ZERO, 1, 1, answered.then_some(path.as_str()));
    }

    #[test]
    fn a_method_is_learned_once_a_backend_answers_it() {
        let metrics = Metrics::new();
        let s = Learned::new(10).service("svc.S", &metrics);
        call(&s, "Get", tonic::Code::Ok, true);
        assert!(!s.label("Get").learns(), "learned from the first answer");
        call(&s, "Get", tonic::Code::Ok, true);
        call(&s, "Nope", tonic::Code::Unimplemented, true);
        call(&s, "Lost", tonic::Code::Unavailable, false);
        call(&s, "Fails", tonic::Code::NotFound, true);
        assert!(s.label("Nope").learns() && s.label("Lost").learns(), "not shown to exist");
        assert_eq!(series(&metrics, "svc.S"), ["Fails", "Get", "unknown"]);
    }

    #[test]
    fn beyond_the_cap_every_other_method_is_other() {
        let metrics = Metrics::new();
        let learned = Learned::new(3);
        let s = learned.service("svc.S", &metrics);
        for i in 0..50 {
            call(&s, &format!("M{i}"), tonic::Code::Ok, true);
        }
        assert_eq!(series(&metrics, "svc.S"), ["M0", "M1", "M2", "other", "unknown"]);
        assert!(!s.label("M1").learns() && !s.label("M9").learns());
        let again = learned.service("svc.S", &metrics);
        assert!(Arc::ptr_eq(&s, &again), "a new table keeps what was learned");
    }

    #[test]
    fn a_cap_of_zero_learns_nothing() {
        let metrics = Metrics::new();
        let s = Learned::new(0).service("svc.S", &metrics);
        call(&s, "Get", tonic::Code::Ok, true);
        call(&s, "Get", tonic::Code::Ok, true);
        assert_eq!(series(&metrics, "svc.S"), ["unknown"]);
    }
}
