//! Serving tonic (or any tower) services through the [`Handler`] trait, so our own services and an
//! embedder's share one listener with the forwarder.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::RecvStream;
use http::Request;
use http_body::{Body, Frame};

use super::handler::{BoxFuture, Handler, Responder};
use super::status::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tower `Service` (such as a tonic generated server) as a [`Handler`].
#[derive(Clone, Debug)]
pub struct TowerHandler<S>(pub S);

impl<S, B> Handler for TowerHandler<S>
where
    S: tower_service::Service<Request<H2Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    fn call<'a>(
        &'a self,
        request: Request<RecvStream>,
        respond: &'a mut Responder,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut svc = self.0.clone();
        Box::pin(async move {
            let internal = |e: BoxError| Error::Status { code: tonic::Code::Internal, message: e.to_string() };
            poll_fn(|cx| svc.poll_ready(cx)).await.map_err(|e| internal(e.into()))?;
            let response = svc.call(request.map(H2Body::new)).await.map_err(|e| internal(e.into()))?;
            let (head, body) = response.into_parts();
            let end = body.is_end_stream();
            if respond.send_headers(http::Response::from_parts(head, ()), end).is_err() || end {
                return Ok(());
            }
            send_body(body, respond).await;
            Ok(())
        })
    }
}

/// Writes a response body to the client, asking for send capacity before each chunk.
async fn send_body<B>(body: B, respond: &mut Responder)
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(frame) = frame else {
            respond.reset(h2::Reason::INTERNAL_ERROR);
            return;
        };
        let Some(stream) = respond.body() else { return };
        match frame.into_data() {
            Ok(mut data) => {
                let mut data = data.copy_to_bytes(data.remaining());
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    let mut cap = stream.capacity();
                    if cap == 0 {
                        cap = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                            Some(Ok(n)) => n,
                            _ => return,
                        };
                    }
                    let chunk = data.split_to(cap.min(data.len()));
                    if stream.send_data(chunk, false).is_err() {
                        return;
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = respond.send_trailers(trailers);
                    return;
                }
            }
        }
    }
    if let Some(stream) = respond.body() {
        let _ = stream.send_data(Bytes::new(), true);
    }
    respond.mark_done();
}

/// An HTTP/2 receive stream as an `http_body::Body`, releasing flow-control capacity as it is read.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    done: bool,
}

impl H2Body {
    fn new(recv: RecvStream) -> Self {
        let done = recv.is_end_stream();
        Self { recv, data_done: done, done }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
