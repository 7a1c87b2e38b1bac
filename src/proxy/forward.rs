//! The frame forwarder: the default unknown-method handler. It picks a backend from the route table and
//! relays the HTTP/2 stream both ways, frame by frame, without decoding the protobuf.
//!
//! A call may take several attempts. Transparently, whatever the rule says: when nothing reached the backend
//! (no connection could be had, or the connection refused new streams after a GOAWAY) it goes to another
//! connection or endpoint, and when the backend says it processed nothing (REFUSED_STREAM, or a stream above
//! its GOAWAY's last stream id) it is sent once more, as gRPC clients do. By the rule's retry policy: a
//! complete request answered with a retryable code, within the rule's budget.

use std::sync::Arc;
use std::time::Instant;

use h2::RecvStream;
use http::Request;

use super::attempt::{self, retry_of, Call, Head, Outcome, Target};
use super::authz;
use super::handler::{BoxFuture, Handler, Responder};
use super::headers::strip_hop_by_hop;
use super::mirror::Mirrors;
use super::pool::Endpoint;
use super::relay::Pipe;
use super::routes::{Bound, Routes};
use super::status::Error;
use super::timeout;
use crate::metrics::{BackendMetrics, Metrics, Retried};
use crate::table::{CallInfo, Pick, Rule};
use crate::tls::ClientIdentity;

/// What a call takes from the client is kept, by reference, up to this size until the backend's response
/// headers arrive, so that it can be sent again (gRPC's transparent retry, the rule's retry policy); a
/// call that sent more is not retried.
const REPLAY_LIMIT: usize = 64 << 10;

/// Most attempts on which nothing reached a backend, per call.
const MAX_UNSENT: u32 = 5;

/// Forwards calls to the backends the route table names.
#[derive(Clone, Debug)]
pub struct Forwarder {
    routes: Arc<Routes>,
}

impl Forwarder {
    /// A forwarder over the given table.
    pub fn new(routes: Arc<Routes>) -> Self {
        Self { routes }
    }
}

impl Handler for Forwarder {
    fn call<'a>(
        &'a self,
        request: Request<RecvStream>,
        respond: &'a mut Responder,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.forward(request, respond))
    }
}

impl Forwarder {
    async fn forward(&self, request: Request<RecvStream>, respond: &mut Responder) -> Result<(), Error> {
        let start = Instant::now();
        let bound = self.routes.load();
        let metrics = self.routes.metrics();
        let method = bound.method_metrics(request.uri().path());
        // Kept only while the call may teach its service a method.
        let path = method.learns().then(|| request.uri().path().to_owned());
        method.start();
        metrics.active_streams.inc();
        let mut obs = Observed::default();
        let result = route(request, respond, &bound, metrics, start, &mut obs).await;
        let code = match &result {
            Ok(()) => obs.code.unwrap_or(tonic::Code::Unknown as u8),
            Err(e) => {
                metrics.local_response(e.reason());
                e.code() as u8
            }
        };
        let answered = path.as_deref().filter(|_| obs.answered && result.is_ok());
        method.finish(code, start.elapsed(), obs.received, obs.sent, answered);
        if let Some(b) = &obs.backend {
            b.response(code);
        }
        metrics.active_streams.dec();
        result
    }
}

/// What the metrics need to know of a call.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// The gRPC status the client got, when it came from the backend (or a reset).
    pub code: Option<u8>,
    pub backend: Option<Arc<BackendMetrics>>,
    pub received: u64,
    pub sent: u64,
    /// A backend answered with gRPC response headers.
    pub answered: bool,
}

async fn route(
    request: Request<RecvStream>,
    respond: &mut Responder,
    bound: &Bound,
    metrics: &Metrics,
    start: Instant,
    obs: &mut Observed,
) -> Result<(), Error> {
    let (parts, body) = request.into_parts();
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
    };
    let call = CallInfo { authority, path: parts.uri.path(), headers: &parts.headers };
    let rule = bound.lookup(&call).ok_or_else(|| Error::NoRoute { method: parts.uri.path().to_string() })?;
    if let Some(allowed) = bound.allowed_identities(rule) {
        let identity = parts.extensions.get::<Arc<ClientIdentity>>().map(|i| &**i);
        authz::check(allowed, identity, || rule.describe())?;
    }

    let client_budget = parts.headers.get("grpc-timeout").map(timeout::parse).transpose().map_err(Error::BadRequest)?;
    let budget = match (client_budget, rule.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(r) = &rule.retry {
        r.record_call();
    }
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    rule.request_headers.apply(&mut headers);
    let head = Head { uri: parts.uri, headers };
    let end = body.is_end_stream();
    let pipe = if end { Pipe::finished() } else { Pipe::default() };
    let mirrors = if rule.mirrors.is_empty() { Mirrors::default() } else { Mirrors::open(rule, &head, end) };
    let mut call = Call { head, body, pipe: pipe.mirror_to(mirrors).capturing(REPLAY_LIMIT) };
    let deadline = budget.map(|b| start + b);
    let exchange = exchange(&mut call, respond, rule, bound, metrics, deadline, obs);
    let result = match budget {
        None => exchange.await,
        Some(b) => match tokio::time::timeout_at((start + b).into(), exchange).await {
            Ok(r) => r,
            // Dropping the exchange dropped the backend stream, which h2 resets with CANCEL.
            Err(_) => Err(Error::DeadlineExceeded(b)),
        },
    };
    obs.received = call.pipe.messages();
    result
}

/// Tries the call until an attempt finishes it, or no further attempt is allowed.
async fn exchange(
    call: &mut Call,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    bound: &Bound,
    metrics: &Metrics,
    deadline: Option<Instant>,
    obs: &mut Observed,
) -> Result<(), Error> {
    let policy = retry_of(rule);
    // Endpoints this call could not connect to, by address: not tried again while others are left.
    let mut unreachable: Vec<usize> = Vec::new();
    let (mut unsent, mut unprocessed_retried, mut attempts) = (0, false, 1);
    loop {
        let target = pick(rule, bound, obs, &unreachable)?;
        let held = match attempt::run(call, respond, rule, target, deadline, obs).await {
            Outcome::Done(r) => return r,
            Outcome::Unsent(e) => {
                let key = Arc::as_ptr(target.endpoint) as usize;
                if matches!(e, Error::Connect { .. }) && !unreachable.contains(&key) {
                    unreachable.push(key);
                }
                unsent += 1;
                let elsewhere = target.peers.len() > unreachable.len() || !matches!(e, Error::Connect { .. });
                if unsent < MAX_UNSENT && elsewhere && call.pipe.replayable() {
                    metrics.retried(Retried::Unsent);
                    tracing::debug!(error = %e, "nothing reached the backend; trying again");
                    continue;
                }
                return Err(e);
            }
            Outcome::Unprocessed(held) => {
                if !unprocessed_retried && call.pipe.replayable() {
                    unprocessed_retried = true;
                    metrics.retried(Retried::Unprocessed);
                    tracing::debug!("backend did not process the stream; sending it again");
                    continue;
                }
                let code = tonic::Code::Unavailable as u8;
                let retry = policy.is_some_and(|r| attempts < r.attempts && r.retries(code));
                if retry && call.pipe.replayable() && policy.is_some_and(|r| r.try_spend()) {
                    attempts += 1;
                    metrics.retried(Retried::Policy);
                    continue;
                }
                held
            }
            Outcome::Answered { code, held } => {
                let retry = policy.is_some_and(|r| attempts < r.attempts && r.retries(code));
                // The policy retries whole requests only (unary calls, as the CRD says).
                if retry && call.pipe.captured().is_some() && policy.is_some_and(|r| r.try_spend()) {
                    attempts += 1;
                    metrics.retried(Retried::Policy);
                    tracing::debug!(attempt = attempts, code, rule = %rule.describe(), "retrying");
                    continue;
                }
                held
            }
        };
        return held.answer(respond, obs);
    }
}

/// Picks the endpoint for an attempt, passing over those the call could not connect to while others are
/// left, and counts the attempt toward its backend.
fn pick<'r>(
    rule: &'r Rule<Arc<Endpoint>>,
    bound: &Bound,
    obs: &mut Observed,
    unreachable: &[usize],
) -> Result<Target<'r>, Error> {
    let avoid = |e: &Arc<Endpoint>| unreachable.contains(&(Arc::as_ptr(e) as usize));
    let (name, result) = match rule.backends.pick_except(avoid) {
        Pick::Endpoint(b, endpoint) => (&*b.name, Ok(Target { endpoint, peers: &b.endpoints })),
        Pick::NoEndpoints(b) => (&*b.name, Err(Error::NoEndpoints { backend: b.name.to_string() })),
        Pick::Unresolved { name, reason } => {
            (name, Err(Error::Unresolved { backend: name.to_string(), reason: reason.to_string() }))
        }
        Pick::NoBackends => return Err(Error::NoBackends { rule: rule.describe() }),
    };
    obs.backend = bound.backend_metrics(name).cloned();
    if let Some(b) = &obs.backend {
        b.request();
    }
    result
}
