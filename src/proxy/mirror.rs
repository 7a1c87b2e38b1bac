//! Request mirroring: best-effort copies of a call to other backends. A mirror never slows its call (one
//! without window for a chunk is dropped) and never outlives it: when the call ends, however it ends, its
//! mirror streams are reset and the tasks draining their answers stop.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::SendStream;
use tokio::sync::oneshot;

use super::attempt::{upstream_request, Head};
use super::pool::{Endpoint, Lease};
use crate::table::Rule;

/// The mirror streams of one call.
#[derive(Debug, Default)]
pub struct Mirrors {
    streams: Vec<SendStream<Bytes>>,
    /// Dropped with the call, which stops the drain tasks.
    stops: Vec<oneshot::Sender<()>>,
}

impl Mirrors {
    /// Opens a copy of the call on one endpoint of each of the rule's mirrors that has a connection ready;
    /// never waits (a mirror without one is skipped, and a connect is started for later calls).
    pub fn open(rule: &Rule<Arc<Endpoint>>, head: &Head, end_of_stream: bool) -> Self {
        let mut mirrors = Self::default();
        for mirror in &rule.mirrors {
            if mirror.endpoints.is_empty() {
                continue;
            }
            let ep = &mirror.endpoints[fastrand::usize(..mirror.endpoints.len())];
            let Some(lease) = ep.try_lease() else { continue };
            let Some(Ok(mut sender)) = lease.sender().ready().now_or_never() else { continue };
            let Ok(request) = upstream_request(head, ep, None) else { continue };
            let Ok((response, send)) = sender.send_request(request, end_of_stream) else { continue };
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(drain(response, lease, stopped));
            mirrors.streams.push(send);
            mirrors.stops.push(stop);
        }
        mirrors
    }

    /// Whether there are no mirror streams.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Sends a copy of `chunk`, dropping mirrors without the window for it.
    pub fn send(&mut self, chunk: &Bytes) {
        self.streams.retain_mut(|m| {
            m.reserve_capacity(chunk.len());
            if m.capacity() >= chunk.len() && m.send_data(chunk.clone(), false).is_ok() {
                return true;
            }
            tracing::debug!("mirror cannot keep up; dropping it");
            m.send_reset(h2::Reason::CANCEL);
            false
        });
    }

    /// Ends the mirrors' requests as the call's ended: with its trailers or an empty END_STREAM.
    pub fn end(&mut self, trailers: Option<&http::HeaderMap>) {
        for m in &mut self.streams {
            let _ = match trailers {
                Some(t) => m.send_trailers(t.clone()),
                None => m.send_data(Bytes::new(), true),
            };
        }
    }
}

impl Drop for Mirrors {
    fn drop(&mut self) {
        // h2 sends nothing for streams the mirror already finished.
        for m in &mut self.streams {
            m.send_reset(h2::Reason::CANCEL);
        }
    }
}

/// Reads and discards a mirror's answer so its window is released, until the answer ends or the call does.
async fn drain(response: ResponseFuture, lease: Lease, stopped: oneshot::Receiver<()>) {
    let read = async {
        if let Ok(r) = response.await {
            let mut body = r.into_body();
            while let Some(Ok(d)) = body.data().await {
                let _ = body.flow_control().release_capacity(d.len());
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = stopped => {}
    }
    drop(lease);
}
