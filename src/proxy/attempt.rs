//! One attempt of a call on one endpoint: open the backend stream, send again what earlier attempts took
//! from the client, relay both directions frame by frame, and say how it ended, so that the forwarder can
//! try again where that is safe (nothing reached the backend, or the backend says it processed nothing).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri};

use super::forward::Observed;
use super::handler::Responder;
use super::headers::strip_hop_by_hop;
use super::pool::{Endpoint, Lease};
use super::relay::{grpc_status, Pipe, PipeError};
use super::status::{code_for_reset, Error};
use super::timeout;
use super::wake::Directions;
use crate::table::{Retry, Rule};

/// The request head, kept to open the backend stream of every attempt.
#[derive(Debug)]
pub struct Head {
    /// The call's URI (its path names the method).
    pub uri: Uri,
    /// Request headers, hop-by-hop ones removed and the rule's edits applied.
    pub headers: HeaderMap,
}

/// A call across its attempts: the head, the client's request stream, and the pipe relaying it, which keeps
/// what it took from the client while the call may still be sent again.
pub(super) struct Call {
    pub head: Head,
    pub body: RecvStream,
    pub pipe: Pipe,
}

/// How an attempt ended.
pub(super) enum Outcome {
    /// The call is finished: relayed, or failed for good.
    Done(Result<(), Error>),
    /// Nothing reached the backend: no connection could be had, or the connection refused new streams.
    Unsent(Error),
    /// The backend did not process the stream: it refused it (REFUSED_STREAM), or it was above the last
    /// stream id of the backend's GOAWAY.
    Unprocessed(Held),
    /// A final answer with a code the rule's retry policy retries, held back until the policy decides.
    Answered { code: u8, held: Held },
}

/// A final answer, held back because the call may be tried again.
pub(super) enum Held {
    /// A trailers-only response.
    Response(Response<()>),
    /// The backend reset the stream.
    Reset(Reason),
    /// An error of switchboard's.
    Error(Error),
}

impl Held {
    /// Gives the answer to the client.
    pub(super) fn answer(self, respond: &mut Responder, obs: &mut Observed) -> Result<(), Error> {
        match self {
            Self::Response(res) => {
                obs.code = grpc_status(res.headers());
                let _ = respond.send_headers(res, true);
                Ok(())
            }
            Self::Reset(reason) => {
                obs.code = Some(code_for_reset(reason) as u8);
                respond.reset(reason);
                Ok(())
            }
            Self::Error(e) => Err(e),
        }
    }
}

/// Where an attempt goes.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    /// The endpoint.
    pub endpoint: &'a Arc<Endpoint>,
    /// All endpoints of its backend: the outlier-ejection cap counts among them.
    pub peers: &'a [Arc<Endpoint>],
}

/// The rule's retry policy, if it can retry at all.
pub(super) fn retry_of<E>(rule: &Rule<E>) -> Option<&Retry> {
    rule.retry.as_deref().filter(|r| r.attempts > 1)
}

/// Runs one attempt of `call` on `target`.
pub(super) async fn run(
    call: &mut Call,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    target: Target<'_>,
    deadline: Option<Instant>,
    obs: &mut Observed,
) -> Outcome {
    let endpoint = target.endpoint;
    // A call its client cancelled already (a burst of rapid resets) is not sent at all.
    if let Poll::Ready(reason) = respond.poll_reset(&mut Context::from_waker(Waker::noop())) {
        respond.cancelled_by_client(reason);
        obs.code = Some(tonic::Code::Cancelled as u8);
        return Outcome::Done(Ok(()));
    }
    let lease = match endpoint.lease().await {
        Ok(l) => l,
        Err(e) => {
            endpoint.record_failure(target.peers);
            return Outcome::Unsent(e);
        }
    };
    let request = match upstream_request(&call.head, endpoint, deadline) {
        Ok(r) => r,
        Err(e) => return Outcome::Done(Err(e)),
    };
    let opened = match lease.sender().ready().await {
        Ok(mut sender) => sender.send_request(request, call.pipe.ends_at_headers()),
        Err(e) => Err(e),
    };
    let (response, mut up_send) = match opened {
        Ok(r) => r,
        Err(e) => {
            // The connection refuses new streams (GOAWAY, or it failed): no stream was opened.
            lease.retire(&e);
            return Outcome::Unsent(upstream_error(endpoint, e));
        }
    };
    // On a later attempt, what the earlier ones took from the client goes first. Should the new stream fail
    // at once, its response says how.
    let _ = call.pipe.replay_into(&mut up_send);
    let relay = Relay {
        request_open: !call.pipe.is_done(),
        call,
        up_send,
        respond,
        rule,
        retry: retry_of(rule),
        target,
        lease: &lease,
        obs,
        sent_at: Instant::now(),
    };
    relay.run(response).await
}

/// Builds the backend's request: its URI names the endpoint, and `grpc-timeout` carries what is left.
pub fn upstream_request(head: &Head, endpoint: &Endpoint, deadline: Option<Instant>) -> Result<Request<()>, Error> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if endpoint.is_tls() { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(endpoint.authority().clone());
    uri.path_and_query = Some(head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    let uri = Uri::from_parts(uri).map_err(|e| Error::BadRequest(format!("invalid request URI: {e}")))?;
    let mut request = Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = head.headers.clone();
    if let Some(d) = deadline {
        // The backend gets what is left of the budget, not the client's original figure.
        request.headers_mut().insert("grpc-timeout", timeout::encode(d.saturating_duration_since(Instant::now())));
    }
    Ok(request)
}

fn upstream_error(endpoint: &Endpoint, source: h2::Error) -> Error {
    Error::Upstream { endpoint: endpoint.addr().to_string(), source }
}

/// The backend's side of the call.
enum Upstream {
    /// Waiting for the response headers.
    Waiting(ResponseFuture),
    /// Relaying the response body.
    Streaming(RecvStream, Pipe),
}

/// The relay of one attempt: both directions and the client's reset, polled by one task.
struct Relay<'r, 'a> {
    call: &'r mut Call,
    up_send: SendStream<Bytes>,
    respond: &'r mut Responder,
    rule: &'r Rule<Arc<Endpoint>>,
    retry: Option<&'r Retry>,
    target: Target<'a>,
    lease: &'r Lease,
    obs: &'r mut Observed,
    sent_at: Instant,
    request_open: bool,
}

impl Relay<'_, '_> {
    async fn run(mut self, response: ResponseFuture) -> Outcome {
        let mut upstream = Upstream::Waiting(response);
        let directions = Directions::new();
        poll_fn(|cx| {
            directions.register(cx);
            if let Some(out) = self.poll_request(&directions) {
                return Poll::Ready(out);
            }
            // While the request is open its receive stream reports a client reset; after that, ask the response.
            if !self.request_open {
                if let Poll::Ready(reason) = self.respond.poll_reset(&mut directions.response_side()) {
                    tracing::debug!(?reason, "client reset the stream; cancelling the backend stream");
                    return Poll::Ready(self.client_cancelled(reason));
                }
            }
            if let Some(mut rcx) = directions.response() {
                if let Poll::Ready(out) = self.poll_response(&mut rcx, &mut upstream) {
                    return Poll::Ready(out);
                }
            }
            // A request waiting for the backend's window polls nothing that a client reset would wake, so ask
            // for it here, last, with a waker for both directions (h2 keeps one per stream).
            if self.request_open && self.call.pipe.is_blocked() {
                if let Poll::Ready(reason) = self.respond.poll_reset(&mut directions.both()) {
                    tracing::debug!(?reason, "client reset a stream waiting for the backend; cancelling it");
                    return Poll::Ready(self.client_cancelled(reason));
                }
            }
            Poll::Pending
        })
        .await
    }

    fn poll_request(&mut self, directions: &Directions) -> Option<Outcome> {
        if !self.request_open {
            return None;
        }
        let mut rcx = directions.request()?;
        match self.call.pipe.poll(&mut rcx, &mut self.call.body, &mut self.up_send) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => {
                self.request_open = false;
                None
            }
            Poll::Ready(Err(PipeError::Recv(e))) => {
                // The client reset its stream or its connection failed.
                tracing::debug!(error = %e, "client stream failed; cancelling the backend stream");
                Some(self.client_cancelled(e.reason().unwrap_or(Reason::CANCEL)))
            }
            // The backend stopped reading (it answered early or reset): the response side says how it ends.
            Poll::Ready(Err(PipeError::Send(_))) => {
                self.request_open = false;
                None
            }
        }
    }

    fn poll_response(&mut self, cx: &mut Context<'_>, upstream: &mut Upstream) -> Poll<Outcome> {
        loop {
            match upstream {
                Upstream::Waiting(response) => match Pin::new(response).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(self.not_answered(e)),
                    Poll::Ready(Ok(response)) => match self.headers(response) {
                        Ok(recv) => *upstream = Upstream::Streaming(recv, Pipe::default()),
                        Err(out) => return Poll::Ready(out),
                    },
                },
                Upstream::Streaming(recv, pipe) => {
                    let down = self.respond.body().expect("headers were sent");
                    let polled = pipe.poll(cx, recv, down);
                    self.obs.sent = pipe.messages();
                    return match polled {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            self.obs.code = pipe.status();
                            self.respond.mark_done();
                            Poll::Ready(Outcome::Done(Ok(())))
                        }
                        Poll::Ready(Err(PipeError::Recv(e))) => Poll::Ready(self.lost(e)),
                        Poll::Ready(Err(PipeError::Send(e))) => {
                            tracing::debug!(error = %e, "client stopped receiving; cancelling the backend stream");
                            Poll::Ready(self.client_cancelled(e.reason().unwrap_or(Reason::CANCEL)))
                        }
                    };
                }
            }
        }
    }

    /// The response headers arrived: relays them and returns the body to stream, or how the call ended.
    fn headers(&mut self, response: Response<RecvStream>) -> Result<RecvStream, Outcome> {
        if let Some(b) = &self.obs.backend {
            b.response_started(self.sent_at.elapsed());
        }
        let (mut head, recv) = response.into_parts();
        let end = recv.is_end_stream();
        let endpoint = self.target.endpoint;
        if let Err(e) = check_grpc(&mut head, end, endpoint) {
            if matches!(e, Error::NotGrpc { status: 502..=504, .. }) {
                endpoint.record_failure(self.target.peers);
            } else {
                endpoint.record_success();
            }
            if !end {
                self.up_send.send_reset(Reason::CANCEL);
            }
            let code = e.code() as u8;
            return Err(self.answered(code, Held::Error(e)));
        }
        endpoint.record_success();
        self.obs.answered = true;
        strip_hop_by_hop(&mut head.headers);
        self.rule.response_headers.apply(&mut head.headers);
        if end {
            // HEADERS with END_STREAM is a trailers-only response: relay it as exactly that.
            let code = grpc_status(&head.headers);
            let held = Held::Response(Response::from_parts(head, ()));
            return Err(match code {
                Some(code) => self.answered(code, held),
                None => Outcome::Done(held.answer(self.respond, self.obs)),
            });
        }
        // Response headers commit the call: it will not be sent again.
        self.call.pipe.stop_capture();
        if self.respond.send_headers(Response::from_parts(head, ()), false).is_err() {
            self.up_send.send_reset(Reason::CANCEL);
            return Err(Outcome::Done(Ok(())));
        }
        Ok(recv)
    }

    /// A final answer: held back when the rule's policy retries its code, relayed otherwise.
    fn answered(&mut self, code: u8, held: Held) -> Outcome {
        if self.retry.is_some_and(|r| r.retries(code)) {
            return Outcome::Answered { code, held };
        }
        Outcome::Done(held.answer(self.respond, self.obs))
    }

    /// The stream failed before its response headers.
    fn not_answered(&mut self, e: h2::Error) -> Outcome {
        let endpoint = self.target.endpoint;
        if e.is_go_away() && e.is_remote() {
            // h2 fails exactly the streams above the GOAWAY's last stream id this way: never processed.
            self.lease.retire(&e);
            return Outcome::Unprocessed(Held::Error(upstream_error(endpoint, e)));
        }
        if e.is_reset() && e.is_remote() && e.reason() == Some(Reason::REFUSED_STREAM) {
            return Outcome::Unprocessed(Held::Reset(Reason::REFUSED_STREAM));
        }
        self.lost(e)
    }

    /// The backend's stream failed: a reset is passed through with its code (the client maps it per the gRPC
    /// spec); a failed connection may have processed the call, so it is not sent again.
    fn lost(&mut self, e: h2::Error) -> Outcome {
        match e.reason() {
            Some(reason) if e.is_reset() && e.is_remote() => {
                tracing::debug!(?reason, "backend reset the stream; relaying the reset");
                Outcome::Done(Held::Reset(reason).answer(self.respond, self.obs))
            }
            _ => {
                self.target.endpoint.record_failure(self.target.peers);
                Outcome::Done(Err(upstream_error(self.target.endpoint, e)))
            }
        }
    }

    fn client_cancelled(&mut self, reason: Reason) -> Outcome {
        self.up_send.send_reset(Reason::CANCEL);
        self.respond.cancelled_by_client(reason);
        self.obs.code = Some(tonic::Code::Cancelled as u8);
        Outcome::Done(Ok(()))
    }
}

/// Whether the backend answered with gRPC: a `grpc-status` (whatever the HTTP status, which then becomes
/// 200 toward the client), or HTTP 200 with a gRPC content-type. Anything else becomes a gRPC status by the
/// gRPC spec's HTTP mapping.
fn check_grpc(head: &mut http::response::Parts, end: bool, endpoint: &Endpoint) -> Result<(), Error> {
    if end && head.headers.contains_key("grpc-status") {
        head.status = StatusCode::OK;
        return Ok(());
    }
    let content_type = head.headers.get(http::header::CONTENT_TYPE);
    let grpc = content_type.is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if head.status == StatusCode::OK && grpc {
        return Ok(());
    }
    Err(Error::NotGrpc {
        endpoint: endpoint.addr().to_string(),
        status: head.status.as_u16(),
        content_type: (!grpc)
            .then(|| content_type.map_or_else(|| "none".into(), |v| String::from_utf8_lossy(v.as_bytes()).into())),
    })
}
