//! gRPC message framing over HTTP/2 streams: the 5-byte prefix (compressed flag, u32 big-endian length)
//! that splits a stream of DATA frames into messages, for handlers that read the messages they relay.
//!
//! A message may span DATA frames and a frame may hold several messages, so the framing is independent of
//! the frames: [`Decoder`] is the pure part, [`MessageReader`] feeds it from a receive stream, and
//! [`send_message`] writes one message within the peer's flow-control window.

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;

const PREFIX: usize = 5;

/// Why a stream of messages could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The compressed flag was set; reading would need the `grpc-encoding` codec.
    #[error("compressed messages not supported")]
    Compressed,
    /// The compressed flag was neither 0 nor 1.
    #[error("invalid compressed flag {0} in a message prefix")]
    InvalidFlag(u8),
    /// A message is longer than the reader accepts.
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The length in the message prefix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a message.
    #[error("stream ended inside a message")]
    Truncated,
    /// A message is not a valid protobuf encoding of the expected type.
    #[error("invalid message: {0}")]
    Invalid(#[from] prost::DecodeError),
    /// The HTTP/2 stream failed (reset by the peer, or its connection failed).
    #[error(transparent)]
    Stream(#[from] h2::Error),
}

/// Splits bytes into gRPC messages. It buffers at most one message and its prefix plus the rest of the last
/// chunk pushed, and rejects a message by its prefix before buffering it.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    /// A decoder that accepts messages of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buf: BytesMut::new(), max }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether no partial message is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, without its prefix; `None` until more bytes arrive.
    pub fn decode(&mut self) -> Result<Option<Bytes>, ReadError> {
        let Some(prefix) = self.buf.get(..PREFIX) else { return Ok(None) };
        match prefix[0] {
            0 => {}
            1 => return Err(ReadError::Compressed),
            flag => return Err(ReadError::InvalidFlag(flag)),
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max {
            return Err(ReadError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// Reads gRPC messages from an HTTP/2 receive stream.
///
/// It reads a DATA frame only when the buffered bytes do not hold a whole message, and gives the frame's
/// flow-control capacity back as it moves the bytes into its buffer. A peer can therefore have at most one
/// stream window in flight plus one message buffered here; waiting for the window of a message larger than
/// the window would deadlock, which is why capacity is released before the message is complete.
#[derive(Debug)]
pub struct MessageReader {
    recv: RecvStream,
    decoder: Decoder,
}

impl MessageReader {
    /// Reads from `recv`, accepting messages of up to `max` bytes.
    pub fn new(recv: RecvStream, max: usize) -> Self {
        Self { recv, decoder: Decoder::new(max) }
    }

    /// The next message, or `None` once the stream's DATA has ended. Cancel-safe.
    pub async fn message<M: prost::Message + Default>(&mut self) -> Result<Option<M>, ReadError> {
        loop {
            if let Some(message) = self.decoder.decode()? {
                return Ok(Some(M::decode(message)?));
            }
            match self.recv.data().await {
                Some(Ok(data)) => {
                    self.decoder.push(&data);
                    let _ = self.recv.flow_control().release_capacity(data.len());
                }
                Some(Err(e)) => return Err(e.into()),
                None if self.decoder.is_empty() => return Ok(None),
                None => return Err(ReadError::Truncated),
            }
        }
    }

    /// The trailers that ended the stream, if any; call after [`message`](Self::message) returned `None`.
    pub async fn trailers(&mut self) -> Result<Option<HeaderMap>, h2::Error> {
        self.recv.trailers().await
    }
}

/// One message with its prefix, uncompressed.
pub fn encode(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("a protobuf message is smaller than 4 GiB"));
    message.encode(&mut buf).expect("the buffer has room for the message");
    buf.freeze()
}

/// Sends one message, never more at a time than the peer's flow-control window allows.
pub async fn send_message(to: &mut SendStream<Bytes>, message: &impl prost::Message) -> Result<(), h2::Error> {
    let mut data = encode(message);
    while !data.is_empty() {
        to.reserve_capacity(data.len());
        let capacity = match to.capacity() {
            // poll_capacity reports only increases; capacity() covers what was already assigned.
            0 => match poll_fn(|cx| to.poll_capacity(cx)).await {
                Some(n) => n?,
                None => return Err(closed(to)),
            },
            n => n,
        };
        if capacity > 0 {
            to.send_data(data.split_to(capacity.min(data.len())), false)?;
        }
    }
    Ok(())
}

/// Ends a send stream as its source ended: with the source's trailers, or with an empty END_STREAM frame.
pub fn finish(to: &mut SendStream<Bytes>, trailers: Option<HeaderMap>) -> Result<(), h2::Error> {
    match trailers {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
}

/// The error behind a send stream that can no longer send: its reset, or CANCEL if it just closed.
fn closed(to: &mut SendStream<Bytes>) -> h2::Error {
    let mut cx = Context::from_waker(Waker::noop());
    match to.poll_reset(&mut cx) {
        Poll::Ready(Ok(reason)) => reason.into(),
        Poll::Ready(Err(e)) => e,
        Poll::Pending => Reason::CANCEL.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Text {
        #[prost(string, tag = "1")]
        text: String,
    }

    fn text(s: &str) -> Text {
        Text { text: s.into() }
    }

    fn decode_all(decoder: &mut Decoder) -> Vec<Text> {
        let mut out = Vec::new();
        while let Some(m) = decoder.decode().unwrap() {
            out.push(<Text as prost::Message>::decode(m).unwrap());
        }
        out
    }

    #[test]
    fn several_messages_in_one_chunk() {
        let mut wire = Vec::new();
        for s in ["a", "", "ccc"] {
            wire.extend_from_slice(&encode(&text(s)));
        }
        let mut d = Decoder::new(64);
        d.push(&wire);
        assert_eq!(decode_all(&mut d), [text("a"), text(""), text("ccc")]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_message_split_at_every_byte() {
        let wire = [encode(&text("hello")), encode(&text("world"))].concat();
        let mut d = Decoder::new(64);
        let mut out = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            out.extend(decode_all(&mut d));
        }
        assert_eq!(out, [text("hello"), text("world")]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_partial_message_is_held_back() {
        let wire = encode(&text("hello"));
        let mut d = Decoder::new(64);
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.decode().unwrap(), None);
        assert!(!d.is_empty());
    }

    #[test]
    fn the_prefix_alone_rejects_oversized_and_compressed_messages() {
        let mut d = Decoder::new(16);
        d.push(&[0, 0, 0, 0, 17]);
        assert!(matches!(d.decode(), Err(ReadError::TooLarge { len: 17, max: 16 })));

        let mut d = Decoder::new(16);
        d.push(&[1, 0, 0, 0, 1]);
        assert!(matches!(d.decode(), Err(ReadError::Compressed)));
        assert_eq!(ReadError::Compressed.to_string(), "compressed messages not supported");

        let mut d = Decoder::new(16);
        d.push(&[2, 0, 0, 0, 0]);
        assert!(matches!(d.decode(), Err(ReadError::InvalidFlag(2))));
    }
}
