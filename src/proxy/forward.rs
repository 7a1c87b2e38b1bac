//! The frame forwarder: the default unknown-method handler. It picks a backend from the route table and
//! relays the HTTP/2 stream both ways, frame by frame, without decoding the protobuf.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri};

use super::handler::{BoxFuture, Handler, Responder};
use super::headers::strip_hop_by_hop;
use super::pool::{Endpoint, Lease};
use super::relay::{grpc_status, Pipe, PipeError};
use super::routes::{Bound, Routes};
use super::status::code_for_reset;
use super::status::Error;
use super::timeout;
use super::wake::Directions;
use crate::metrics::BackendMetrics;
use crate::table::{CallInfo, Pick, Retry, Rule};

/// Requests up to this size are kept (by reference) while they are relayed, so a rule with a retry policy can
/// replay them; larger requests are not retried.
const REPLAY_LIMIT: usize = 64 << 10;

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
        method.start();
        metrics.active_streams.inc();
        let mut obs = Observed::default();
        let result = route(request, respond, &bound, start, &mut obs).await;
        let code = match &result {
            Ok(()) => obs.code.unwrap_or(tonic::Code::Unknown as u8),
            Err(e) => {
                metrics.local_response(e.reason());
                e.code() as u8
            }
        };
        method.finish(code, start.elapsed(), obs.received, obs.sent);
        if let Some(b) = &obs.backend {
            b.response(code);
        }
        metrics.active_streams.dec();
        result
    }
}

/// What the metrics need to know of a call.
#[derive(Debug, Default)]
struct Observed {
    /// The gRPC status the client got, when it came from the backend (or a reset).
    code: Option<u8>,
    backend: Option<Arc<BackendMetrics>>,
    received: u64,
    sent: u64,
}

async fn route(
    request: Request<RecvStream>,
    respond: &mut Responder,
    bound: &Bound,
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

    let client_budget = parts.headers.get("grpc-timeout").map(timeout::parse).transpose().map_err(Error::BadRequest)?;
    let budget = match (client_budget, rule.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(r) = &rule.retry {
        r.record_call();
    }
    let exchange = exchange(parts, body, respond, rule, bound, budget.map(|b| start + b), obs);
    match budget {
        None => exchange.await,
        Some(b) => match tokio::time::timeout_at((start + b).into(), exchange).await {
            Ok(r) => r,
            // Dropping the exchange dropped the backend stream, which h2 resets with CANCEL.
            Err(_) => Err(Error::DeadlineExceeded(b)),
        },
    }
}

fn pick<'r>(rule: &'r Rule<Arc<Endpoint>>, bound: &Bound, obs: &mut Observed) -> Result<&'r Arc<Endpoint>, Error> {
    let (name, result) = match rule.backends.pick() {
        Pick::Endpoint(b, ep) => (&*b.name, Ok(ep)),
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

/// The rule's retry policy, if it can retry at all.
fn retry_of(rule: &Rule<Arc<Endpoint>>) -> Option<&Retry> {
    rule.retry.as_deref().filter(|r| r.attempts > 1)
}

/// A final answer held back because it may be retried.
enum Held {
    /// A trailers-only response with a retryable status.
    Response(Response<()>),
    /// The backend refused the stream (REFUSED_STREAM: not processed).
    Reset(Reason),
    /// No connection could be had.
    Error(Error),
}

/// How one attempt ended.
enum Attempt {
    /// The call is finished (relayed, or failed for good).
    Done(Result<(), Error>),
    /// Retryable outcome; `replay` holds the whole request when it can be sent again.
    Failed { code: u8, held: Held, replay: Option<Vec<Bytes>>, unsent: Option<Box<(http::request::Parts, RecvStream)>> },
}

/// The call's request headers, kept for replays.
struct Head {
    uri: Uri,
    headers: HeaderMap,
}

async fn exchange(
    mut parts: http::request::Parts,
    body: RecvStream,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    bound: &Bound,
    deadline: Option<Instant>,
    obs: &mut Observed,
) -> Result<(), Error> {
    strip_hop_by_hop(&mut parts.headers);
    rule.request_headers.apply(&mut parts.headers);
    let retry = retry_of(rule);
    let head = retry.map(|_| Head { uri: parts.uri.clone(), headers: parts.headers.clone() });
    let mut source = Some((parts, body));
    let mut replay: Option<Vec<Bytes>> = None;
    let mut attempt = 1;
    loop {
        let outcome = match pick(rule, bound, obs) {
            Err(e) => return Err(e),
            Ok(endpoint) => match (source.take(), &replay, &head) {
                (Some((parts, body)), _, _) => stream(parts, body, respond, rule, endpoint, deadline, obs).await,
                (None, Some(chunks), Some(head)) => {
                    replay_attempt(head, chunks, respond, rule, endpoint, deadline, obs).await
                }
                (None, _, _) => return Err(Error::BadRequest("request cannot be replayed".into())),
            },
        };
        let (code, held) = match outcome {
            Attempt::Done(r) => return r,
            Attempt::Failed { code, held, replay: r, unsent } => {
                if r.is_some() {
                    replay = r;
                }
                source = unsent.map(|b| *b);
                (code, held)
            }
        };
        let can_resend = source.is_some() || replay.is_some();
        let retry_ok = retry.is_some_and(|r| attempt < r.attempts && r.retries(code) && can_resend && r.try_spend());
        if retry_ok {
            attempt += 1;
            tracing::debug!(attempt, code, rule = %rule.describe(), "retrying");
            continue;
        }
        return match held {
            Held::Response(res) => {
                obs.code = grpc_status(res.headers());
                let _ = respond.send_headers(res, true);
                Ok(())
            }
            Held::Reset(reason) => {
                obs.code = Some(code_for_reset(reason) as u8);
                respond.reset(reason);
                Ok(())
            }
            Held::Error(e) => Err(e),
        };
    }
}

/// Builds the backend's request: its URI names the endpoint, and `grpc-timeout` carries what is left.
fn upstream_request(
    mut parts: http::request::Parts,
    endpoint: &Endpoint,
    deadline: Option<Instant>,
) -> Result<Request<()>, Error> {
    if let Some(d) = deadline {
        // The backend gets what is left of the budget, not the client's original figure.
        parts.headers.insert("grpc-timeout", timeout::encode(d.saturating_duration_since(Instant::now())));
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.authority().clone());
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    parts.uri = Uri::from_parts(uri).map_err(|e| Error::BadRequest(format!("invalid request URI: {e}")))?;
    Ok(Request::from_parts(parts, ()))
}

fn head_parts(head: &Head) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = http::Method::POST;
    parts.uri = head.uri.clone();
    parts.headers = head.headers.clone();
    parts
}

/// Opens best-effort copies of the call to the rule's mirrors; never waits.
fn open_mirrors(
    rule: &Rule<Arc<Endpoint>>,
    parts: &http::request::Parts,
    end_of_stream: bool,
) -> Vec<SendStream<Bytes>> {
    let mut streams = Vec::new();
    for mirror in &rule.mirrors {
        if mirror.endpoints.is_empty() {
            continue;
        }
        let ep = &mirror.endpoints[fastrand::usize(..mirror.endpoints.len())];
        let Some(lease) = ep.try_lease() else { continue };
        let Some(Ok(mut sender)) = lease.sender().ready().now_or_never() else { continue };
        let copy = head_parts(&Head { uri: parts.uri.clone(), headers: parts.headers.clone() });
        let Ok(request) = upstream_request(copy, ep, None) else { continue };
        let Ok((response, send)) = sender.send_request(request, end_of_stream) else { continue };
        tokio::spawn(drain_mirror(response, lease));
        streams.push(send);
    }
    streams
}

/// Reads and discards a mirror's response so its stream and window are released.
async fn drain_mirror(response: ResponseFuture, lease: Lease) {
    if let Ok(r) = response.await {
        let mut body = r.into_body();
        while let Some(Ok(d)) = body.data().await {
            let _ = body.flow_control().release_capacity(d.len());
        }
    }
    drop(lease);
}

/// The first attempt: relays the client's stream.
async fn stream(
    parts: http::request::Parts,
    mut body: RecvStream,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    endpoint: &Arc<Endpoint>,
    deadline: Option<Instant>,
    obs: &mut Observed,
) -> Attempt {
    let retry = retry_of(rule);
    let lease = match endpoint.lease().await {
        Ok(l) => l,
        Err(e) => {
            return Attempt::Failed {
                code: 14,
                held: Held::Error(e),
                replay: None,
                unsent: Some(Box::new((parts, body))),
            }
        }
    };
    let end_of_stream = body.is_end_stream();
    let mirrors = if rule.mirrors.is_empty() { Vec::new() } else { open_mirrors(rule, &parts, end_of_stream) };
    let request = match upstream_request(parts, endpoint, deadline) {
        Ok(r) => r,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let mut pipe = if end_of_stream { Pipe::finished() } else { Pipe::default().mirror_to(mirrors) };
    if retry.is_some() {
        pipe = pipe.capturing(REPLAY_LIMIT);
    }
    relay(request, Some(&mut body), pipe, respond, rule, endpoint, &lease, obs).await
}

/// A later attempt: sends the captured request again.
async fn replay_attempt(
    head: &Head,
    chunks: &[Bytes],
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    endpoint: &Arc<Endpoint>,
    deadline: Option<Instant>,
    obs: &mut Observed,
) -> Attempt {
    let lease = match endpoint.lease().await {
        Ok(l) => l,
        Err(e) => return Attempt::Failed { code: 14, held: Held::Error(e), replay: None, unsent: None },
    };
    let request = match upstream_request(head_parts(head), endpoint, deadline) {
        Ok(r) => r,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let mut sender = match lease.sender().ready().await {
        Ok(s) => s,
        Err(e) => return Attempt::Done(Err(Error::Upstream { endpoint: endpoint.addr().to_string(), source: e })),
    };
    let (response, mut up_send) = match sender.send_request(request, false) {
        Ok(r) => r,
        Err(e) => return Attempt::Done(Err(Error::Upstream { endpoint: endpoint.addr().to_string(), source: e })),
    };
    // The replayed request is at most REPLAY_LIMIT bytes: within any sane window, so send it whole.
    for c in chunks {
        let _ = up_send.send_data(c.clone(), false);
    }
    let _ = up_send.send_data(Bytes::new(), true);
    relay_response(response, up_send, None, Pipe::finished(), respond, rule, endpoint, obs).await
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    request: Request<()>,
    body: Option<&mut RecvStream>,
    pipe: Pipe,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    endpoint: &Arc<Endpoint>,
    lease: &Lease,
    obs: &mut Observed,
) -> Attempt {
    let upstream_err = |source| Error::Upstream { endpoint: endpoint.addr().to_string(), source };
    let end_of_stream = pipe.is_done();
    let mut sender = match lease.sender().ready().await {
        Ok(s) => s,
        Err(e) => return Attempt::Done(Err(upstream_err(e))),
    };
    let (response, up_send) = match sender.send_request(request, end_of_stream) {
        Ok(r) => r,
        Err(e) => return Attempt::Done(Err(upstream_err(e))),
    };
    relay_response(response, up_send, body, pipe, respond, rule, endpoint, obs).await
}

enum Upstream {
    Waiting(ResponseFuture),
    Streaming(RecvStream, Pipe),
}

#[allow(clippy::too_many_arguments)]
async fn relay_response(
    response: ResponseFuture,
    mut up_send: SendStream<Bytes>,
    body: Option<&mut RecvStream>,
    mut request_pipe: Pipe,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    endpoint: &Arc<Endpoint>,
    obs: &mut Observed,
) -> Attempt {
    let upstream_err = |source| Error::Upstream { endpoint: endpoint.addr().to_string(), source };
    let sent_at = Instant::now();
    let outcome = relay_frames(
        response,
        &mut up_send,
        body,
        &mut request_pipe,
        respond,
        rule,
        retry_of(rule),
        obs,
        sent_at,
        &upstream_err,
    )
    .await;
    obs.received += request_pipe.messages();
    outcome
}

/// The relay loop proper: both directions and the client's reset, polled by one task.
#[allow(clippy::too_many_arguments)]
async fn relay_frames(
    response: ResponseFuture,
    up_send: &mut SendStream<Bytes>,
    mut body: Option<&mut RecvStream>,
    request_pipe: &mut Pipe,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    retry: Option<&Retry>,
    obs: &mut Observed,
    sent_at: Instant,
    upstream_err: &impl Fn(h2::Error) -> Error,
) -> Attempt {
    let mut request_open = !request_pipe.is_done();
    let mut upstream = Upstream::Waiting(response);
    let directions = Directions::new();

    poll_fn(|cx| {
        directions.register(cx);
        if request_open {
            if let (Some(body), Some(mut rcx)) = (body.as_deref_mut(), directions.request()) {
                match request_pipe.poll(&mut rcx, body, up_send) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => request_open = false,
                    Poll::Ready(Err(PipeError::Recv(e))) => {
                        // The client reset its stream or its connection failed: cancel the backend's stream.
                        tracing::debug!(error = %e, "client stream failed; cancelling the backend stream");
                        up_send.send_reset(Reason::CANCEL);
                        respond.reset(e.reason().unwrap_or(Reason::CANCEL));
                        obs.code = Some(tonic::Code::Cancelled as u8);
                        return Poll::Ready(Attempt::Done(Ok(())));
                    }
                    // The backend stopped reading (it answered early or reset): the response side says how it ends.
                    Poll::Ready(Err(PipeError::Send(_))) => request_open = false,
                }
            }
        }
        // While the request is open its receive stream reports a client reset; after that, ask the response.
        if !request_open || body.is_none() {
            if let Poll::Ready(reason) = respond.poll_reset(&mut directions.response_side()) {
                tracing::debug!(?reason, "client reset the stream; cancelling the backend stream");
                up_send.send_reset(Reason::CANCEL);
                respond.reset(reason);
                obs.code = Some(tonic::Code::Cancelled as u8);
                return Poll::Ready(Attempt::Done(Ok(())));
            }
        }
        let replay = || request_pipe.captured().map(<[Bytes]>::to_vec);
        let Some(mut rcx) = directions.response() else { return Poll::Pending };
        let cx = &mut rcx;
        loop {
            match &mut upstream {
                Upstream::Waiting(response) => match Pin::new(response).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        let refused = e.is_remote() && e.reason() == Some(Reason::REFUSED_STREAM);
                        if refused && retry.is_some() {
                            let held = Held::Reset(Reason::REFUSED_STREAM);
                            return Poll::Ready(Attempt::Failed { code: 14, held, replay: replay(), unsent: None });
                        }
                        return Poll::Ready(Attempt::Done(relay_upstream_error(e, respond, upstream_err, obs)));
                    }
                    Poll::Ready(Ok(response)) => {
                        if let Some(b) = &obs.backend {
                            b.response_started(sent_at.elapsed());
                        }
                        let (mut head, recv) = response.into_parts();
                        strip_hop_by_hop(&mut head.headers);
                        rule.response_headers.apply(&mut head.headers);
                        // HEADERS with END_STREAM is a trailers-only response: relay it as exactly that.
                        let end = recv.is_end_stream();
                        if end {
                            if let Some(code) = retry.and_then(|r| grpc_status(&head.headers).filter(|c| r.retries(*c)))
                            {
                                let held = Held::Response(Response::from_parts(head, ()));
                                return Poll::Ready(Attempt::Failed { code, held, replay: replay(), unsent: None });
                            }
                        }
                        if end {
                            obs.code = grpc_status(&head.headers);
                        }
                        if respond.send_headers(Response::from_parts(head, ()), end).is_err() {
                            up_send.send_reset(Reason::CANCEL);
                            return Poll::Ready(Attempt::Done(Ok(())));
                        }
                        if end {
                            return Poll::Ready(Attempt::Done(Ok(())));
                        }
                        upstream = Upstream::Streaming(recv, Pipe::default());
                    }
                },
                Upstream::Streaming(recv, pipe) => {
                    let down: &mut SendStream<Bytes> = respond.body().expect("headers were sent");
                    let polled = pipe.poll(cx, recv, down);
                    obs.sent = pipe.messages();
                    return match polled {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            obs.code = pipe.status();
                            respond.mark_done();
                            Poll::Ready(Attempt::Done(Ok(())))
                        }
                        Poll::Ready(Err(PipeError::Recv(e))) => {
                            Poll::Ready(Attempt::Done(relay_upstream_error(e, respond, upstream_err, obs)))
                        }
                        Poll::Ready(Err(PipeError::Send(e))) => {
                            tracing::debug!(error = %e, "client stopped receiving; cancelling the backend stream");
                            up_send.send_reset(Reason::CANCEL);
                            respond.reset(Reason::CANCEL);
                            obs.code = Some(tonic::Code::Cancelled as u8);
                            Poll::Ready(Attempt::Done(Ok(())))
                        }
                    };
                }
            }
        }
    })
    .await
}

/// A backend's RST_STREAM is passed through with its code (the client maps it per the gRPC spec); a failed
/// connection becomes UNAVAILABLE.
fn relay_upstream_error(
    e: h2::Error,
    respond: &mut Responder,
    upstream_err: &impl Fn(h2::Error) -> Error,
    obs: &mut Observed,
) -> Result<(), Error> {
    match e.reason() {
        Some(reason) if e.is_reset() && e.is_remote() => {
            tracing::debug!(?reason, "backend reset the stream; relaying the reset");
            obs.code = Some(code_for_reset(reason) as u8);
            respond.reset(reason);
            Ok(())
        }
        _ => Err(upstream_err(e)),
    }
}
