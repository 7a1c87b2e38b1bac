//! Moving DATA frames from one HTTP/2 stream to another without reading ahead of the receiver.
//!
//! A [`Pipe`] holds at most one received frame. It asks the destination for send capacity (the peer's
//! flow-control window), sends what fits, and only then releases the same number of bytes back to the
//! source, so the source's window refills exactly as fast as the destination drains. Memory per stream is
//! therefore bounded by the windows, and a slow reader slows the writer end to end.

use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};

use super::mirror::Mirrors;

/// Why a pipe stopped early.
#[derive(Debug)]
pub enum PipeError {
    /// Receiving from the source failed (reset by the peer, or its connection failed).
    Recv(h2::Error),
    /// Sending to the destination failed (reset by the peer, or its connection failed).
    Send(h2::Error),
}

/// Relays DATA (and trailers, or the final END_STREAM) from a receive stream to a send stream.
///
/// Optionally it also copies what it sends to mirror streams (best effort: a mirror without window for a chunk
/// is dropped rather than allowed to slow the primary), and keeps the sent chunks, up to a limit, so that the
/// request can be sent again to another stream (a retry). Chunks are reference-counted: neither copies bytes.
/// A pipe outlives the destination it relays to: after a failed attempt, [`Pipe::replay_into`] sends what
/// was sent so far to the next destination, and relaying goes on from where it stopped.
#[derive(Debug, Default)]
pub struct Pipe {
    pending: Option<Bytes>,
    done: bool,
    trailers: bool,
    bytes: u64,
    mirrors: Mirrors,
    capture: Option<Capture>,
    messages: MessageCounter,
    status: Option<u8>,
}

/// Counts gRPC messages by their 5-byte length prefixes (framing only; the protobuf is never decoded).
#[derive(Debug, Default)]
struct MessageCounter {
    count: u64,
    /// Bytes of the current message body still to come.
    remaining: u64,
    header: [u8; 5],
    header_len: usize,
}

impl MessageCounter {
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 5 {
                self.count += 1;
                self.remaining =
                    u64::from(u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]));
                self.header_len = 0;
            }
        }
    }
}

#[derive(Debug)]
struct Capture {
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
    limit: usize,
    overflowed: bool,
}

impl Pipe {
    /// A pipe whose source has already ended (its HEADERS carried END_STREAM).
    pub fn finished() -> Self {
        Self { done: true, ..Self::default() }
    }

    /// Whether the source ended and its end was relayed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes relayed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// gRPC messages relayed so far.
    pub fn messages(&self) -> u64 {
        self.messages.count
    }

    /// The `grpc-status` of the trailers relayed, if any.
    pub fn status(&self) -> Option<u8> {
        self.status
    }

    /// Also sends everything to these streams, dropping any that cannot keep up.
    pub fn mirror_to(mut self, mirrors: Mirrors) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// Keeps up to `limit` bytes of what is sent, for [`Pipe::captured`] and [`Pipe::replay_into`].
    pub fn capturing(mut self, limit: usize) -> Self {
        self.capture = Some(Capture { chunks: Vec::new(), len: 0, limit, overflowed: false });
        self
    }

    /// Stops keeping what is sent, and frees what was kept: the call will not be sent again.
    pub fn stop_capture(&mut self) {
        self.capture = None;
    }

    /// Everything the source sent, once it ended without trailers and within the capture limit.
    pub fn captured(&self) -> Option<&[Bytes]> {
        match &self.capture {
            Some(c) if self.done && !c.overflowed => Some(&c.chunks),
            _ => None,
        }
    }

    /// Whether everything taken from the source so far can be sent again: nothing was taken, or all of it was
    /// kept (requests with trailers are never sent again).
    pub fn replayable(&self) -> bool {
        !self.trailers
            && match &self.capture {
                Some(c) => !c.overflowed,
                None => self.bytes == 0,
            }
    }

    /// Whether a new stream's HEADERS should carry END_STREAM: the source ended without sending anything.
    pub fn ends_at_headers(&self) -> bool {
        self.done && self.bytes == 0 && !self.trailers
    }

    /// Whether a frame taken from the source waits for the destination's window.
    pub fn is_blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends what was sent so far, and the end if the source ended, to a new destination; relaying then goes
    /// on there. Only for a [`Pipe::replayable`] pipe. The bytes are within the capture limit and were taken
    /// under the source's window, so h2 buffers them rather than waiting for the destination's.
    pub fn replay_into(&self, to: &mut SendStream<Bytes>) -> Result<(), h2::Error> {
        if self.ends_at_headers() {
            return Ok(());
        }
        if let Some(c) = &self.capture {
            for chunk in &c.chunks {
                to.send_data(chunk.clone(), false)?;
            }
        }
        if self.done {
            to.send_data(Bytes::new(), true)?;
        }
        Ok(())
    }

    fn copy(&mut self, chunk: &Bytes) {
        if let Some(c) = &mut self.capture {
            if !c.overflowed {
                if c.len + chunk.len() > c.limit {
                    c.overflowed = true;
                    c.chunks = Vec::new();
                } else {
                    c.len += chunk.len();
                    c.chunks.push(chunk.clone());
                }
            }
        }
        self.mirrors.send(chunk);
    }

    /// Makes progress; Ready(Ok) once the source's end (trailers or END_STREAM) has been relayed.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut RecvStream,
        to: &mut SendStream<Bytes>,
    ) -> Poll<Result<(), PipeError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(buf) = &mut self.pending {
                to.reserve_capacity(buf.len());
                let mut cap = to.capacity();
                if cap == 0 {
                    // poll_capacity only reports increases; `capacity()` above covers what is already there.
                    cap = match ready!(to.poll_capacity(cx)) {
                        Some(Ok(n)) => n,
                        Some(Err(e)) => return Poll::Ready(Err(PipeError::Send(e))),
                        None => return Poll::Ready(Err(PipeError::Send(closed(to, cx)))),
                    };
                    if cap == 0 {
                        continue;
                    }
                }
                let n = cap.min(buf.len());
                let chunk = buf.split_to(n);
                if buf.is_empty() {
                    self.pending = None;
                }
                self.messages.observe(&chunk);
                // Taken from the source now, whether or not this destination gets it: kept for a replay.
                self.bytes += n as u64;
                if !self.mirrors.is_empty() || self.capture.is_some() {
                    self.copy(&chunk);
                }
                let sent = to.send_data(chunk, false);
                // Only now that the destination took the bytes (or they are kept for the next one) may the
                // source send more.
                let _ = from.flow_control().release_capacity(n);
                sent.map_err(PipeError::Send)?;
                continue;
            }
            match ready!(from.poll_data(cx)) {
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => self.pending = Some(data),
                Some(Err(e)) => return Poll::Ready(Err(PipeError::Recv(e))),
                None => {
                    match ready!(from.poll_trailers(cx)) {
                        Ok(Some(trailers)) => {
                            self.status = grpc_status(&trailers);
                            self.trailers = true;
                            self.mirrors.end(Some(&trailers));
                            to.send_trailers(trailers).map_err(PipeError::Send)?
                        }
                        // The seed's point: a half-close without trailers is an empty DATA frame with END_STREAM.
                        Ok(None) => {
                            self.mirrors.end(None);
                            to.send_data(Bytes::new(), true).map_err(PipeError::Send)?
                        }
                        Err(e) => return Poll::Ready(Err(PipeError::Recv(e))),
                    }
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// The `grpc-status` in a header block, if any.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The error behind a send stream that can no longer send.
fn closed(to: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> h2::Error {
    match to.poll_reset(cx) {
        Poll::Ready(Ok(reason)) => h2::Error::from(reason),
        Poll::Ready(Err(e)) => e,
        Poll::Pending => h2::Error::from(h2::Reason::CANCEL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_across_and_within_frames() {
        let mut c = MessageCounter::default();
        // Two messages in one frame: 3 bytes and 0 bytes.
        c.observe(&[0, 0, 0, 0, 3, 9, 9, 9, 0, 0, 0, 0, 0]);
        assert_eq!(c.count, 2);
        // One message split inside its prefix and its body.
        c.observe(&[0, 0]);
        c.observe(&[0, 1, 0, 7]);
        assert_eq!(c.count, 3);
        c.observe(&vec![1; 255]);
        assert_eq!(c.count, 3, "body of 256 bytes still incomplete");
        c.observe(&[1, 0, 0, 0, 0, 1, 5]);
        assert_eq!(c.count, 4);
    }
}
