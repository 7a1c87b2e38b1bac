//! A client's cancel reaches the backend at once, also while the call waits for flow-control window in
//! either direction: a request the backend does not read (switchboard holds a frame it cannot send), and a
//! response the client does not read (the backend's frames wait in switchboard). Against grpc-go, whose
//! handler sees the cancel as its context ending, and the tonic backend.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use support::peers::{PeerServer, ServerConfig};
use support::raw::open_raw_call;
use support::*;

/// The spec asks for 100 ms; this bound only catches a cancel that never arrives on a loaded machine.
const WITHIN: Duration = Duration::from_secs(1);

fn framed(msg: &support::pb::EchoRequest) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// Sends 4 MiB of request messages on a stream whose reader never reads, then resets it.
async fn flood_then_cancel(addr: std::net::SocketAddr, method: &str, headers: &[(&str, &str)]) -> Instant {
    let (_response, mut body) = open_raw_call(addr, &format!("/switchboard.echo.v1.Echo/{method}"), headers).await;
    let chunk = framed(&support::pb::EchoRequest { payload: vec![7; 16 << 10], count: 0 });
    for _ in 0..256 {
        body.send_data(chunk.clone(), false).unwrap();
    }
    // Long enough for switchboard to fill the backend's window and hold a frame it cannot send.
    tokio::time::sleep(Duration::from_millis(300)).await;
    body.send_reset(h2::Reason::CANCEL);
    Instant::now()
}

#[tokio::test]
async fn cancel_of_a_request_the_grpc_go_backend_does_not_read() {
    let server = PeerServer::go(&ServerConfig::named("go"));
    let p = proxy(&routes_yaml(&[(ECHO, &[(server.addr, 1)])])).await;
    let cancelled = flood_then_cancel(p.addr, "ClientStream", &[("x-no-read", "1")]).await;
    eventually_within("grpc-go's handler saw the cancel", WITHIN, || server.stats().calls_cancelled == 1).await;
    eprintln!("cancel reached grpc-go after {:?}", cancelled.elapsed());
}

#[tokio::test]
async fn cancel_of_a_request_the_raw_backend_does_not_read() {
    let (addr, seen) = support::raw::raw_backend().await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(addr, 1)])])).await;
    let cancelled = flood_then_cancel(p.addr, "ClientStream", &[("x-mode", "hang")]).await;
    eventually_within("the backend stream was reset", WITHIN, || seen.resets.load(Ordering::SeqCst) == 1).await;
    eprintln!("cancel reached the raw backend after {:?}", cancelled.elapsed());
}

/// A server stream the client never reads: the backend's messages fill the windows, then the client resets.
async fn unread_response_then_cancel(addr: std::net::SocketAddr) -> Instant {
    let (response, mut body) = open_raw_call(addr, "/switchboard.echo.v1.Echo/ServerStream", &[]).await;
    let ask = framed(&support::pb::EchoRequest { payload: vec![1; 16 << 10], count: 100_000 });
    body.send_data(ask, true).unwrap();
    // Never read, never release window: the backend blocks once switchboard's window toward it is full.
    let _unread = response.await.unwrap().into_body();
    tokio::time::sleep(Duration::from_millis(300)).await;
    body.send_reset(h2::Reason::CANCEL);
    Instant::now()
}

#[tokio::test]
async fn cancel_of_a_response_the_client_does_not_read_reaches_grpc_go() {
    let server = PeerServer::go(&ServerConfig::named("go"));
    let p = proxy(&routes_yaml(&[(ECHO, &[(server.addr, 1)])])).await;
    let cancelled = unread_response_then_cancel(p.addr).await;
    eventually_within("grpc-go's handler saw the cancel", WITHIN, || server.stats().calls_cancelled == 1).await;
    eprintln!("cancel reached grpc-go after {:?}", cancelled.elapsed());
}

#[tokio::test]
async fn cancel_of_a_response_the_client_does_not_read_reaches_tonic() {
    let b = backend("tonic").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let cancelled = unread_response_then_cancel(p.addr).await;
    eventually_within("tonic's stream saw the cancel", WITHIN, || b.seen.cancelled.load(Ordering::SeqCst) == 1).await;
    eprintln!("cancel reached tonic after {:?}", cancelled.elapsed());
}
