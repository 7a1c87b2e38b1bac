//! The unknown-method handler: the extension point every call that switchboard does not serve itself goes
//! through. The default is the frame forwarder; an embedder can plug in their own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};

use super::status::{status_trailers, trailers_only, Error};

/// A boxed future, as handlers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles one gRPC call: the request (headers and the HTTP/2 receive stream) in, the response written
/// through the [`Responder`], the outcome out.
///
/// Returning `Err` before any response was sent makes the server answer with a trailers-only status from
/// [`Error::code`]; after headers were sent, the error becomes the trailers.
pub trait Handler: Send + Sync + 'static {
    /// Serves the call whose method is `request.uri().path()`.
    fn call<'a>(&'a self, request: Request<RecvStream>, respond: &'a mut Responder)
        -> BoxFuture<'a, Result<(), Error>>;
}

impl<H: Handler + ?Sized> Handler for std::sync::Arc<H> {
    fn call<'a>(
        &'a self,
        request: Request<RecvStream>,
        respond: &'a mut Responder,
    ) -> BoxFuture<'a, Result<(), Error>> {
        (**self).call(request, respond)
    }
}

enum State {
    /// Nothing sent yet.
    Idle(SendResponse<Bytes>),
    /// Headers sent, the body is open.
    Streaming(SendStream<Bytes>),
    /// END_STREAM or RST_STREAM sent.
    Done,
}

/// The server side of one call's response. It records what was sent so the server can always finish the
/// stream properly, whatever the handler did.
pub struct Responder {
    state: State,
    cancelled: bool,
}

impl Responder {
    pub(crate) fn new(send: SendResponse<Bytes>) -> Self {
        Self { state: State::Idle(send), cancelled: false }
    }

    /// Whether response headers were sent.
    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::Idle(_))
    }

    /// Whether the response stream is finished (ended or reset).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Sends the response headers; `end_of_stream` makes it a trailers-only response.
    pub fn send_headers(&mut self, response: Response<()>, end_of_stream: bool) -> Result<(), h2::Error> {
        let State::Idle(send) = &mut self.state else {
            return Err(h2::Error::from(Reason::INTERNAL_ERROR));
        };
        let stream = send.send_response(response, end_of_stream)?;
        self.state = if end_of_stream { State::Done } else { State::Streaming(stream) };
        Ok(())
    }

    /// The open response body, once headers were sent.
    pub fn body(&mut self) -> Option<&mut SendStream<Bytes>> {
        match &mut self.state {
            State::Streaming(s) => Some(s),
            _ => None,
        }
    }

    /// Sends trailers, ending the response.
    pub fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        let State::Streaming(s) = &mut self.state else {
            return Err(h2::Error::from(Reason::INTERNAL_ERROR));
        };
        let r = s.send_trailers(trailers);
        self.state = State::Done;
        r
    }

    /// Marks the response finished after the handler ended the body itself (END_STREAM on DATA or trailers).
    pub fn mark_done(&mut self) {
        self.state = State::Done;
    }

    /// Resets the stream with `reason`.
    pub fn reset(&mut self, reason: Reason) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Idle(mut s) => s.send_reset(reason),
            State::Streaming(mut s) => s.send_reset(reason),
            State::Done => {}
        }
    }

    /// Resets the stream because the client cancelled the call (reset it, or its connection failed). The
    /// server counts such calls per connection: many early cancels end the connection (rapid reset).
    pub fn cancelled_by_client(&mut self, reason: Reason) {
        self.cancelled = true;
        self.reset(reason);
    }

    /// Whether the call ended by [`Responder::cancelled_by_client`].
    pub fn was_cancelled_by_client(&self) -> bool {
        self.cancelled
    }

    /// Ready with the reason when the client resets the stream.
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        let r = match &mut self.state {
            State::Idle(s) => s.poll_reset(cx),
            State::Streaming(s) => s.poll_reset(cx),
            State::Done => return Poll::Pending,
        };
        match r {
            Poll::Ready(Ok(reason)) => Poll::Ready(reason),
            Poll::Ready(Err(e)) => Poll::Ready(e.reason().unwrap_or(Reason::CANCEL)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends the call with a status: trailers-only before headers, trailers after. No-op once done.
    pub fn send_status(&mut self, code: tonic::Code, message: &str) {
        let result = match &mut self.state {
            State::Idle(_) => self.send_headers(trailers_only(code, message), true),
            State::Streaming(_) => self.send_trailers(status_trailers(code, message)),
            State::Done => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not send status; client gone");
            self.state = State::Done;
        }
    }

    /// Finishes the stream after a handler returned.
    pub(crate) fn finish(&mut self, result: &Result<(), Error>) {
        match result {
            Err(e) => self.send_status(e.code(), &e.to_string()),
            Ok(()) if self.is_done() => {}
            // The handler returned without finishing its response: never leave the client waiting.
            Ok(()) => self.send_status(tonic::Code::Unknown, "handler returned without completing the response"),
        }
    }
}
