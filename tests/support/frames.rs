//! A frame-level HTTP/2 client for what gRPC libraries hide: which GOAWAY a server sends, and when, and how it
//! treats PINGs. It speaks just enough HTTP/2 to stay connected: the preface, SETTINGS and their ACKs, PING ACKs.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// A GOAWAY frame's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream_id: u32,
    /// The HTTP/2 error code: 0 NO_ERROR, 11 ENHANCE_YOUR_CALM, ...
    pub error_code: u32,
    pub debug_data: Vec<u8>,
}

pub struct FrameClient {
    tcp: TcpStream,
}

impl FrameClient {
    /// Connects and sends the client preface with empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PREFACE).await.unwrap();
        let mut client = Self { tcp };
        client.write_frame(SETTINGS, 0, &[]).await;
        client
    }

    /// Sends a PING (not an ACK) with `data`.
    pub async fn ping(&mut self, data: [u8; 8]) {
        self.write_frame(PING, 0, &data).await;
    }

    /// Reads frames until a GOAWAY, answering SETTINGS and PINGs on the way (so a server's graceful drain, which
    /// waits for a PING ACK, proceeds). `None` when the connection ends first.
    pub async fn next_goaway(&mut self) -> Option<GoAway> {
        loop {
            let (kind, flags, payload) = self.read_frame().await?;
            match kind {
                SETTINGS if flags & ACK == 0 => self.write_frame(SETTINGS, ACK, &[]).await,
                PING if flags & ACK == 0 => self.write_frame(PING, ACK, &payload).await,
                GOAWAY => {
                    let word = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().unwrap());
                    return Some(GoAway {
                        last_stream_id: word(0) & 0x7fff_ffff,
                        error_code: word(4),
                        debug_data: payload[8..].to_vec(),
                    });
                }
                _ => {}
            }
        }
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], payload))
    }

    async fn write_frame(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        // A peer that already closed is what some tests wait for; the next read reports it.
        let _ = self.tcp.write_all(&frame).await;
    }
}
