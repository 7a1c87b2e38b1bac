//! Choosing where one call goes: a weighted pick among a rule's backends, then power-of-two-choices on
//! pending requests among the backend's available endpoints.

use std::sync::Arc;

/// Something whose current load can be compared: pending requests on an endpoint.
pub trait Load {
    /// Calls in flight (lower is better).
    fn load(&self) -> usize;

    /// Whether the endpoint should get calls now: not backing off after failed connects, not ejected as an
    /// outlier. Unavailable endpoints are picked only when no available one is left ("panic mode").
    fn available(&self) -> bool {
        true
    }
}

impl Load for crate::table::build::EndpointAddr {
    fn load(&self) -> usize {
        0
    }
}

/// A backend: a name for humans and metrics, and its ready endpoints.
#[derive(Debug)]
pub struct Backend<E> {
    /// `namespace/service:port`, or standalone `host:port`.
    pub name: Arc<str>,
    /// Ready endpoints; empty means the backend exists but nothing can serve it now.
    pub endpoints: Vec<E>,
}

impl<E> Backend<E> {
    pub(crate) fn map<E2>(&self, f: &mut impl FnMut(&E) -> E2) -> Backend<E2> {
        Backend { name: self.name.clone(), endpoints: self.endpoints.iter().map(f).collect() }
    }
}

/// A backendRef as the data plane sees it.
#[derive(Debug)]
pub enum Target<E> {
    /// A resolved backend.
    Backend(Backend<E>),
    /// A backendRef that could not be resolved: its share of calls fails with UNAVAILABLE.
    Unresolved {
        /// The reference as written, for the error message.
        name: Arc<str>,
        /// Why it is unresolved.
        reason: Arc<str>,
    },
}

/// The result of picking a destination for one call.
#[derive(Debug)]
pub enum Pick<'a, E> {
    /// Send the call to this endpoint of this backend.
    Endpoint(&'a Backend<E>, &'a E),
    /// The chosen backend has no ready endpoints.
    NoEndpoints(&'a Backend<E>),
    /// The chosen backendRef is unresolved.
    Unresolved {
        /// The backendRef as written.
        name: &'a str,
        /// Why it is unresolved.
        reason: &'a str,
    },
    /// The rule has no backend with a weight above zero.
    NoBackends,
}

/// A rule's backends with their cumulative weights.
#[derive(Debug)]
pub struct WeightedBackends<E> {
    /// (cumulative weight up to and including this target, target); weight-0 targets are left out.
    targets: Vec<(u64, Target<E>)>,
}

impl<E> Default for WeightedBackends<E> {
    fn default() -> Self {
        Self { targets: Vec::new() }
    }
}

impl<E> WeightedBackends<E> {
    /// Builds from `(weight, target)` pairs.
    pub fn new(items: impl IntoIterator<Item = (u32, Target<E>)>) -> Self {
        let mut total = 0u64;
        let targets = items
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, t)| {
                total += u64::from(w);
                (total, t)
            })
            .collect();
        Self { targets }
    }

    /// Every target with a weight above zero.
    pub fn targets(&self) -> impl Iterator<Item = &Target<E>> {
        self.targets.iter().map(|(_, t)| t)
    }

    /// Picks a destination; `rand(n)` returns a uniform number in `0..n`.
    pub fn pick_with(&self, rand: impl FnMut(u64) -> u64) -> Pick<'_, E>
    where
        E: Load,
    {
        self.pick_avoiding(rand, |_| false)
    }

    /// Picks a destination, passing over endpoints for which `avoid` holds (those a call already failed to
    /// reach) unless nothing else is left. Among the rest, power of two choices on load, preferring available
    /// endpoints: a failing endpoint looks idle, so load alone would favour it.
    pub fn pick_avoiding(&self, mut rand: impl FnMut(u64) -> u64, avoid: impl Fn(&E) -> bool) -> Pick<'_, E>
    where
        E: Load,
    {
        let target = match self.targets.as_slice() {
            [] => return Pick::NoBackends,
            [(_, only)] => only,
            all => {
                let total = all.last().expect("not empty").0;
                let r = rand(total);
                let i = all.partition_point(|(cum, _)| *cum <= r);
                &all[i].1
            }
        };
        match target {
            Target::Unresolved { name, reason } => Pick::Unresolved { name, reason },
            Target::Backend(b) => match b.endpoints.len() {
                0 => Pick::NoEndpoints(b),
                1 => Pick::Endpoint(b, &b.endpoints[0]),
                n => Pick::Endpoint(b, choose(&b.endpoints, n, &mut rand, &avoid)),
            },
        }
    }

    /// Picks a destination with the thread-local fast random generator.
    pub fn pick(&self) -> Pick<'_, E>
    where
        E: Load,
    {
        self.pick_with(|n| fastrand::u64(0..n))
    }

    /// Like [`Self::pick`], passing over endpoints for which `avoid` holds while others are left.
    pub fn pick_except(&self, avoid: impl Fn(&E) -> bool) -> Pick<'_, E>
    where
        E: Load,
    {
        self.pick_avoiding(|n| fastrand::u64(0..n), avoid)
    }

    pub(crate) fn map<E2>(&self, f: &mut impl FnMut(&E) -> E2) -> WeightedBackends<E2> {
        let targets = self
            .targets
            .iter()
            .map(|(cum, t)| {
                let t = match t {
                    Target::Backend(b) => Target::Backend(b.map(f)),
                    Target::Unresolved { name, reason } => {
                        Target::Unresolved { name: name.clone(), reason: reason.clone() }
                    }
                };
                (*cum, t)
            })
            .collect();
        WeightedBackends { targets }
    }
}

/// Power of two choices among `n >= 2` endpoints: two distinct random ones, the usable and less loaded wins.
/// When neither is usable, the first usable one from a random start; when none is, any not avoided.
fn choose<'e, E: Load>(
    endpoints: &'e [E],
    n: usize,
    rand: &mut impl FnMut(u64) -> u64,
    avoid: &impl Fn(&E) -> bool,
) -> &'e E {
    let i = rand(n as u64) as usize;
    let j = (i + 1 + rand(n as u64 - 1) as usize) % n;
    let (x, y) = (&endpoints[i], &endpoints[j]);
    let usable = |e: &E| !avoid(e) && e.available();
    match (usable(x), usable(y)) {
        (true, true) if y.load() < x.load() => y,
        (true, _) => x,
        (false, true) => y,
        (false, false) => {
            let from = |i: usize| (0..n).map(move |k| &endpoints[(i + k) % n]);
            from(i).find(|e| usable(e)).or_else(|| from(i).find(|e| !avoid(e))).unwrap_or(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Ep(&'static str, Cell<usize>, Cell<bool>);
    impl Load for Ep {
        fn load(&self) -> usize {
            self.1.get()
        }
        fn available(&self) -> bool {
            self.2.get()
        }
    }

    fn backend(name: &'static str, eps: &[&'static str]) -> Target<Ep> {
        let endpoints = eps.iter().map(|e| Ep(e, Cell::new(0), Cell::new(true))).collect();
        Target::Backend(Backend { name: name.into(), endpoints })
    }

    fn endpoints(w: &WeightedBackends<Ep>) -> &[Ep] {
        let Some(Target::Backend(b)) = w.targets().next() else { unreachable!() };
        &b.endpoints
    }

    fn picked_endpoint(p: Pick<'_, Ep>) -> &'static str {
        match p {
            Pick::Endpoint(_, ep) => ep.0,
            other => panic!("{other:?}"),
        }
    }

    fn picked<E: Load>(p: Pick<'_, E>) -> String {
        match p {
            Pick::Endpoint(b, _) => b.name.to_string(),
            Pick::NoEndpoints(b) => format!("empty:{}", b.name),
            Pick::Unresolved { name, .. } => format!("unresolved:{name}"),
            Pick::NoBackends => "none".into(),
        }
    }

    /// Chi-square goodness of fit of weighted picks, with a fixed seed so the test is deterministic.
    #[test]
    fn weights_are_honoured() {
        let w = WeightedBackends::new([
            (1, backend("a", &["a1"])),
            (0, backend("zero", &["z1"])),
            (3, backend("b", &["b1"])),
            (6, Target::Unresolved { name: "gone".into(), reason: "not found".into() }),
        ]);
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 100_000;
        let mut counts = std::collections::HashMap::<String, u64>::new();
        for _ in 0..n {
            *counts.entry(picked(w.pick_with(|m| rng.u64(0..m)))).or_default() += 1;
        }
        assert_eq!(counts.get("zero"), None, "weight 0 gets nothing");
        let expected = [("a", 0.1), ("b", 0.3), ("unresolved:gone", 0.6)];
        let chi2: f64 = expected
            .iter()
            .map(|(k, p)| {
                let e = p * n as f64;
                let o = *counts.get(*k).unwrap_or(&0) as f64;
                (o - e).powi(2) / e
            })
            .sum();
        // 2 degrees of freedom: p = 0.001 at 13.8.
        assert!(chi2 < 13.8, "chi2 {chi2}, counts {counts:?}");
    }

    #[test]
    fn empty_and_unresolved() {
        assert_eq!(picked(WeightedBackends::<Ep>::new([]).pick()), "none");
        assert_eq!(picked(WeightedBackends::new([(0, backend("a", &["a1"]))]).pick()), "none");
        assert_eq!(picked(WeightedBackends::new([(5, backend("a", &[]))]).pick()), "empty:a");
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let w = WeightedBackends::new([(1, backend("a", &["busy", "idle"]))]);
        let Target::Backend(b) = w.targets().next().unwrap() else { unreachable!() };
        b.endpoints[0].1.set(10);
        for _ in 0..100 {
            match w.pick() {
                Pick::Endpoint(_, ep) => assert_eq!(ep.0, "idle"),
                other => panic!("{other:?}"),
            }
        }
        // With three endpoints the two choices are always distinct, so the busiest never wins.
        let w = WeightedBackends::new([(1, backend("a", &["x", "y", "z"]))]);
        let Target::Backend(b) = w.targets().next().unwrap() else { unreachable!() };
        b.endpoints[2].1.set(99);
        for _ in 0..200 {
            let Pick::Endpoint(_, ep) = w.pick() else { unreachable!() };
            assert_ne!(ep.0, "z");
        }
    }

    /// A fast-failing endpoint has no calls in flight, so load alone would make it the favourite.
    #[test]
    fn unavailable_endpoints_are_passed_over_while_others_are_up() {
        let w = WeightedBackends::new([(1, backend("a", &["down", "busy", "idle"]))]);
        let eps = endpoints(&w);
        eps[0].2.set(false);
        eps[1].1.set(50);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..500 {
            assert_ne!(picked_endpoint(w.pick_with(|m| rng.u64(0..m))), "down");
        }
        // With every endpoint down, calls still go somewhere (the connect attempt decides).
        eps[1].2.set(false);
        eps[2].2.set(false);
        let seen: std::collections::HashSet<_> = (0..200).map(|_| picked_endpoint(w.pick())).collect();
        assert_eq!(seen.len(), 3, "panic mode spreads over all endpoints: {seen:?}");
    }

    #[test]
    fn avoided_endpoints_are_used_only_when_nothing_else_is_left() {
        let w = WeightedBackends::new([(1, backend("a", &["x", "y", "z"]))]);
        for _ in 0..200 {
            assert_eq!(picked_endpoint(w.pick_except(|e| e.0 != "z")), "z");
            assert_ne!(picked_endpoint(w.pick_except(|e| e.0 == "z")), "z");
        }
        // Not avoided beats available: a call does not return to an endpoint it could not reach.
        endpoints(&w)[2].2.set(false);
        for _ in 0..200 {
            assert_eq!(picked_endpoint(w.pick_except(|e| e.0 != "z")), "z", "the last one not avoided");
        }
        assert!(["x", "y", "z"].contains(&picked_endpoint(w.pick_except(|_| true))));
    }
}
