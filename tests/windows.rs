//! Flow-control windows cannot be exhausted by slow readers: a few calls whose clients stop reading must not
//! block the other calls on the same backend connection (its connection window is a stream window for
//! every stream it may carry), nor on the same client connection.

mod support;

use std::time::Duration;

use prost::Message;
use support::peers::{PeerServer, ServerConfig};
use support::raw::open_raw_call;
use support::*;

/// Opens a 4 MiB server stream and never reads it: the backend fills every window on the way.
async fn stalled_reader(addr: std::net::SocketAddr) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let ask = support::pb::EchoRequest { payload: vec![3; 64 << 10], count: 64 }.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(ask.len() as u32).to_be_bytes());
    framed.extend_from_slice(&ask);
    let (response, mut body) = open_raw_call(addr, "/switchboard.echo.v1.Echo/ServerStream", &[]).await;
    body.send_data(framed.into(), true).unwrap();
    (response, body)
}

async fn six_stalled_readers_then_a_seventh_call(backend: std::net::SocketAddr, name: &str) {
    let p = proxy(&routes_yaml(&[(ECHO, &[(backend, 1)])])).await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        stalled.push(stalled_reader(p.addr).await);
    }
    // Let the backend push until every window is full.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seventh = client(p.addr).await;
    let answer = tokio::time::timeout(Duration::from_secs(1), seventh.unary(req(b"7"))).await;
    let reply = answer.expect("the seventh call answered within 1 s").unwrap();
    assert_eq!(reply.into_inner().backend, name);
    // The stalled calls are all on the backend connection the seventh used.
    let table = p.routes.load();
    let Some(switchboard::table::Target::Backend(b)) = table.rules()[0].backends.targets().next() else {
        unreachable!()
    };
    assert_eq!(b.endpoints[0].connections(), 1);
    drop(stalled);
}

#[tokio::test]
async fn stalled_readers_do_not_block_a_shared_grpc_go_connection() {
    let server = PeerServer::go(&ServerConfig::named("go"));
    six_stalled_readers_then_a_seventh_call(server.addr, "go").await;
}

#[tokio::test]
async fn stalled_readers_do_not_block_a_shared_tonic_connection() {
    let b = backend("tonic").await;
    six_stalled_readers_then_a_seventh_call(b.addr, "tonic").await;
}

/// Six calls on one client connection upload to a backend that does not read; a seventh call on the same
/// client connection still gets through.
#[tokio::test]
async fn stalled_uploads_do_not_block_their_client_connection() {
    let (addr, _) = support::raw::raw_backend().await;
    let b = backend("tonic").await;
    let p = proxy(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)]), (ECHO, &[(b.addr, 1)])])).await;
    let channel = support::channel(p.addr).await; // one HTTP/2 connection for all seven calls
    let mut uploads = Vec::new();
    for _ in 0..6 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        uploads.push(tokio::spawn(async move {
            grpc.ready().await.unwrap();
            // 4 MiB to a raw.v1 method, routed to the backend that never reads.
            let mut r = tonic::Request::new(tokio_stream::iter((0..64).map(|_| req(&[5; 64 << 10]))));
            r.metadata_mut().insert("x-mode", "hang".parse().unwrap());
            let path = http::uri::PathAndQuery::from_static("/raw.v1.Raw/Upload");
            let codec = tonic_prost::ProstCodec::<support::pb::EchoRequest, support::pb::EchoReply>::default();
            let _ = grpc.client_streaming(r, path, codec).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seventh = support::pb::echo_client::EchoClient::new(channel);
    let answer = tokio::time::timeout(Duration::from_secs(1), seventh.unary(req(b"7"))).await;
    assert_eq!(answer.expect("answered within 1 s").unwrap().into_inner().backend, "tonic");
    for u in uploads {
        u.abort();
    }
}
