//! The frame forwarder: the default unknown-method handler. It picks a backend from the route table and
//! relays the HTTP/2 stream both ways, frame by frame, without decoding the protobuf.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};

use super::handler::{BoxFuture, Handler, Responder};
use super::headers::strip_hop_by_hop;
use super::pool::Endpoint;
use super::relay::{Pipe, PipeError};
use super::routes::Routes;
use super::status::Error;
use super::timeout;
use crate::table::{CallInfo, Pick, Rule};

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
        let table = self.routes.load();
        let (parts, body) = request.into_parts();
        let authority = match parts.uri.authority() {
            Some(a) => a.as_str(),
            None => parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
        };
        let call = CallInfo { authority, path: parts.uri.path(), headers: &parts.headers };
        let rule = table.lookup(&call).ok_or_else(|| Error::NoRoute { method: parts.uri.path().to_string() })?;

        let client_budget =
            parts.headers.get("grpc-timeout").map(timeout::parse).transpose().map_err(Error::BadRequest)?;
        let budget = match (client_budget, rule.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let endpoint = match rule.backends.pick() {
            Pick::Endpoint(_, ep) => ep,
            Pick::NoEndpoints(b) => return Err(Error::NoEndpoints { backend: b.name.to_string() }),
            Pick::Unresolved { name, reason } => {
                return Err(Error::Unresolved { backend: name.to_string(), reason: reason.to_string() })
            }
            Pick::NoBackends => return Err(Error::NoBackends { rule: rule.describe() }),
        };
        let exchange = exchange(parts, body, respond, rule, endpoint, budget.map(|b| start + b));
        match budget {
            None => exchange.await,
            Some(b) => match tokio::time::timeout_at((start + b).into(), exchange).await {
                Ok(r) => r,
                // Dropping the exchange dropped the backend stream, which h2 resets with CANCEL.
                Err(_) => Err(Error::DeadlineExceeded(b)),
            },
        }
    }
}

enum Upstream {
    Waiting(ResponseFuture),
    Streaming(RecvStream, Pipe),
}

async fn exchange(
    mut parts: http::request::Parts,
    mut body: RecvStream,
    respond: &mut Responder,
    rule: &Rule<Arc<Endpoint>>,
    endpoint: &Arc<Endpoint>,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let lease = endpoint.lease().await?;
    let upstream_err = |source| Error::Upstream { endpoint: endpoint.addr().to_string(), source };

    strip_hop_by_hop(&mut parts.headers);
    rule.request_headers.apply(&mut parts.headers);
    if let Some(d) = deadline {
        // The backend gets what is left of the budget, not the client's original figure.
        parts.headers.insert("grpc-timeout", timeout::encode(d.saturating_duration_since(Instant::now())));
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.authority().clone());
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    parts.uri = Uri::from_parts(uri).map_err(|e| Error::BadRequest(format!("invalid request URI: {e}")))?;
    let request = Request::from_parts(parts, ());

    let end_of_stream = body.is_end_stream();
    let sender = lease.sender().ready().await.map_err(upstream_err)?;
    let mut sender = sender;
    let (response, mut up_send) = sender.send_request(request, end_of_stream).map_err(upstream_err)?;
    let mut request_pipe = if end_of_stream { Pipe::finished() } else { Pipe::default() };
    let mut request_open = true;
    let mut upstream = Upstream::Waiting(response);

    poll_fn(|cx| {
        if let Poll::Ready(reason) = respond.poll_reset(cx) {
            tracing::debug!(?reason, "client reset the stream; cancelling the backend stream");
            up_send.send_reset(Reason::CANCEL);
            respond.reset(reason);
            return Poll::Ready(Ok(()));
        }
        if request_open {
            match request_pipe.poll(cx, &mut body, &mut up_send) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => request_open = false,
                Poll::Ready(Err(PipeError::Recv(e))) => {
                    // The client reset its stream or its connection failed: cancel the backend's stream.
                    tracing::debug!(error = %e, "client stream failed; cancelling the backend stream");
                    up_send.send_reset(Reason::CANCEL);
                    respond.reset(e.reason().unwrap_or(Reason::CANCEL));
                    return Poll::Ready(Ok(()));
                }
                // The backend stopped reading (it answered early or reset): the response side says how it ends.
                Poll::Ready(Err(PipeError::Send(_))) => request_open = false,
            }
        }
        loop {
            match &mut upstream {
                Upstream::Waiting(response) => match Pin::new(response).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(relay_upstream_error(e, respond, &upstream_err)),
                    Poll::Ready(Ok(response)) => {
                        let (mut head, recv) = response.into_parts();
                        strip_hop_by_hop(&mut head.headers);
                        rule.response_headers.apply(&mut head.headers);
                        // HEADERS with END_STREAM is a trailers-only response: relay it as exactly that.
                        let end = recv.is_end_stream();
                        if respond.send_headers(Response::from_parts(head, ()), end).is_err() {
                            up_send.send_reset(Reason::CANCEL);
                            return Poll::Ready(Ok(()));
                        }
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                        upstream = Upstream::Streaming(recv, Pipe::default());
                    }
                },
                Upstream::Streaming(recv, pipe) => {
                    let down: &mut SendStream<Bytes> = respond.body().expect("headers were sent");
                    return match pipe.poll(cx, recv, down) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            respond.mark_done();
                            Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Err(PipeError::Recv(e))) => {
                            Poll::Ready(relay_upstream_error(e, respond, &upstream_err))
                        }
                        Poll::Ready(Err(PipeError::Send(e))) => {
                            tracing::debug!(error = %e, "client stopped receiving; cancelling the backend stream");
                            up_send.send_reset(Reason::CANCEL);
                            respond.reset(Reason::CANCEL);
                            Poll::Ready(Ok(()))
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
) -> Result<(), Error> {
    match e.reason() {
        Some(reason) if e.is_reset() && e.is_remote() => {
            tracing::debug!(?reason, "backend reset the stream; relaying the reset");
            respond.reset(reason);
            Ok(())
        }
        _ => Err(upstream_err(e)),
    }
}
