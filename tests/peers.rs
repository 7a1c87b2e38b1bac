//! The real peers of tests/support/peers.rs, proven directly (no switchboard): the grpc-go and grpc-js servers
//! answer like the tonic test backend, the grpc-go counters see cancels and ping abuse, each server's
//! max-connection-age sends GOAWAY, SIGTERM drains, and both load clients spread calls with round_robin.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::{Code, Request};

use support::frames::{FrameClient, GoAway};
use support::pb::EchoRequest;
use support::peers::{ipv4_target, Load, LoadClient, PeerServer, ServerConfig};
use support::raw::open_raw_call;
use support::{client, eventually, req};

const EXIT: Duration = Duration::from_secs(10);
/// The last-stream-id of a graceful drain's first GOAWAY: 2^31-1, "any stream you may have sent".
const ANY_STREAM: u32 = 0x7fff_ffff;

fn with_metadata<T>(msg: T, pairs: &[(&'static str, &'static str)]) -> Request<T> {
    let mut request = Request::new(msg);
    for (key, value) in pairs {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

/// The semantics every peer server copies from the tonic backend (tests/support/mod.rs).
async fn check_echo(addr: SocketAddr, name: &str) {
    let mut c = client(addr).await;
    let header = |md: &tonic::metadata::MetadataMap, key: &str| md.get(key).map(|v| v.to_str().unwrap().to_owned());

    let res = c.unary(with_metadata(req(b"hi"), &[("x-echo-color", "blue"), ("x-other", "kept")])).await.unwrap();
    assert_eq!(header(res.metadata(), "x-backend").as_deref(), Some(name), "unary headers: {:?}", res.metadata());
    assert_eq!(header(res.metadata(), "x-echo-color").as_deref(), Some("blue"));
    assert_eq!(header(res.metadata(), "x-other"), None, "only x-echo-* is echoed");
    let reply = res.into_inner();
    assert_eq!((reply.payload.as_slice(), reply.backend.as_str(), reply.received), (&b"hi"[..], name, 1));

    let res = c.server_stream(EchoRequest { payload: b"s".to_vec(), count: 5 }).await.unwrap();
    assert_eq!(header(res.metadata(), "x-backend").as_deref(), Some(name));
    let replies: Vec<_> = res.into_inner().collect::<Result<_, _>>().await.unwrap();
    assert_eq!(replies.iter().map(|r| r.received).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(replies.iter().all(|r| r.payload == b"s" && r.backend == name), "{replies:?}");

    let requests = tokio_stream::iter([req(&[1; 10]), req(&[2; 10]), req(&[3; 100])]);
    let reply = c.client_stream(requests).await.unwrap().into_inner();
    assert_eq!(reply.received, 3);
    assert_eq!(reply.backend, format!("{name}:120"), "ClientStream backend is NAME:BYTES");
    assert_eq!(reply.payload, [3; 64], "the last payload, cut to 64 bytes");

    let requests = tokio_stream::iter([req(b"a"), req(b"b"), req(b"c")]);
    let res = c.bidi_stream(requests).await.unwrap();
    assert_eq!(header(res.metadata(), "x-backend").as_deref(), Some(name));
    let replies: Vec<_> = res.into_inner().collect::<Result<_, _>>().await.unwrap();
    let got: Vec<_> = replies.iter().map(|r| (r.payload.clone(), r.received)).collect();
    assert_eq!(got, [(b"a".to_vec(), 0), (b"b".to_vec(), 1), (b"c".to_vec(), 2)]);

    let status = c.unary(with_metadata(req(b"f"), &[("x-fail", "9")])).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), format!("failed by {name} as asked"));
    assert_eq!(header(status.metadata(), "x-backend").as_deref(), Some(name), "x-backend in the trailers");
}

#[tokio::test]
async fn tonic_backend_passes_the_peer_check() {
    let backend = support::backend("tonic").await;
    check_echo(backend.addr, "tonic").await;
}

#[tokio::test]
async fn go_server_answers_like_the_tonic_backend() {
    let server = PeerServer::go(&ServerConfig::named("go-a"));
    check_echo(server.addr, "go-a").await;
    let stats = server.stats();
    assert_eq!((stats.calls_started, stats.calls_finished, stats.calls_active), (5, 5, 0), "{stats:?}");
}

#[tokio::test]
async fn grpc_js_server_answers_like_the_tonic_backend() {
    let server = PeerServer::grpc_js(&ServerConfig::named("js-a"));
    check_echo(server.addr, "js-a").await;
}

/// `x-no-read` parks the handler without reading; an RST_STREAM(CANCEL) from the client must still reach it.
/// (A raw h2 client, because a tonic client does not reset this call when dropped: once the response headers
/// have come, hyper 1.12's task that sends the pending request body holds the stream open; its cancel path,
/// `PipeMap`'s `cancel_rx` in src/proto/h2/client.rs, only fires while the headers are awaited.)
#[tokio::test]
async fn go_server_counts_a_cancelled_client_stream() {
    let server = PeerServer::go(&ServerConfig::named("go-a"));
    let (response, mut body) =
        open_raw_call(server.addr, "/switchboard.echo.v1.Echo/ClientStream", &[("x-no-read", "1")]).await;
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["x-backend"], "go-a", "x-no-read answers with headers at once");
    assert_eq!(server.stats().calls_active, 1);

    body.send_reset(h2::Reason::CANCEL);
    eventually("the handler sees the cancel", || {
        let stats = server.stats();
        stats.calls_cancelled == 1 && stats.calls_active == 0
    })
    .await;
}

/// The frames of a max-connection-age drain, until the connection ends.
async fn goaways_at_max_connection_age(server: &PeerServer) -> Vec<GoAway> {
    let mut conn = FrameClient::connect(server.addr).await;
    let mut goaways = Vec::new();
    let frames = async {
        while let Some(goaway) = conn.next_goaway().await {
            goaways.push(goaway);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), frames)
        .await
        .unwrap_or_else(|_| panic!("the connection outlived its max age by 10 s; server log:\n{}", server.log()));
    goaways
}

fn config_with_max_age(name: &str) -> ServerConfig {
    ServerConfig { max_connection_age: Some(Duration::from_millis(200)), ..ServerConfig::named(name) }
}

fn goaway(last_stream_id: u32, debug_data: &[u8]) -> GoAway {
    GoAway { last_stream_id, error_code: 0, debug_data: debug_data.to_vec() }
}

/// grpc-go drains in two steps (internal/transport/http2_server.go, `drain` and `outgoingGoAwayHandler`):
/// GOAWAY(2^31-1, NO_ERROR) and a PING, then on the PING ACK GOAWAY(last processed stream, NO_ERROR).
#[tokio::test]
async fn go_server_sends_goaway_at_max_connection_age() {
    let server = PeerServer::go(&config_with_max_age("go-a"));
    let goaways = goaways_at_max_connection_age(&server).await;
    assert_eq!(goaways, [goaway(ANY_STREAM, b""), goaway(0, b"")]);

    // A client making calls meanwhile moves to new connections and loses none.
    let report = Load { concurrency: 4, ..Load::lasting(server.addr.to_string(), Duration::from_secs(1)) }
        .run(LoadClient::Grpcio)
        .await;
    assert_eq!(report.failed(), 0, "{report:?}");
    let stats = server.stats();
    assert!(stats.connections_accepted >= 4, "one connection per ~200 ms expected: {stats:?}");
}

/// grpc-js (server.js, the connection age timer): `session.goaway(NO_ERROR, 2^31-1, "max_age")`, then Node's
/// `session.close()`, whose own GOAWAYs name the last stream the server took.
#[tokio::test]
async fn grpc_js_server_sends_goaway_at_max_connection_age() {
    let server = PeerServer::grpc_js(&config_with_max_age("js-a"));
    let goaways = goaways_at_max_connection_age(&server).await;
    assert_eq!(goaways[0], goaway(ANY_STREAM, b"max_age"), "{goaways:?}");
    assert!(goaways.len() > 1 && goaways[1..].iter().all(|g| *g == goaway(0, b"")), "{goaways:?}");
}

/// grpcio (C-core) honours `--option grpc.max_connection_age_ms` given to echo_server.py, draining in two steps.
#[tokio::test]
async fn grpcio_server_sends_goaway_at_max_connection_age() {
    let server = PeerServer::grpcio(&config_with_max_age("py-a"));
    let goaways = goaways_at_max_connection_age(&server).await;
    assert_eq!(goaways, [goaway(ANY_STREAM, b"max_age"), goaway(0, b"max_age")]);
}

/// grpc-go's default enforcement (no pings without streams, more than 2 strikes) ends an abusive pinger's
/// connection with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"), and the counter sees grpc-go's log line.
#[tokio::test]
async fn go_server_answers_ping_abuse_with_too_many_pings() {
    let server = PeerServer::go(&ServerConfig::named("go-a"));
    let mut conn = FrameClient::connect(server.addr).await;
    for i in 0..4 {
        conn.ping([i; 8]).await;
    }
    let goaway = tokio::time::timeout(Duration::from_secs(10), conn.next_goaway()).await.unwrap();
    let goaway = goaway.unwrap_or_else(|| panic!("connection closed without GOAWAY; log:\n{}", server.log()));
    assert_eq!((goaway.error_code, goaway.debug_data.as_slice()), (11, &b"too_many_pings"[..]), "{goaway:?}");
    eventually("the too-many-pings counter rises", || server.stats().too_many_pings == 1).await;
}

/// SIGTERM with a call open: the listener closes, the open call still completes, the process exits 0.
async fn check_graceful_stop(mut server: PeerServer) {
    let mut c = client(server.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // BidiStream answers with headers before reading, so the call is open in the handler once this returns.
    let res = c.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    let mut replies = res.into_inner();

    server.terminate();
    eventually("the listener closes", || std::net::TcpStream::connect(server.addr).is_err()).await;
    tx.send(req(b"late")).await.unwrap();
    let reply = replies.message().await.unwrap().expect("a reply during the drain");
    assert_eq!(reply.payload, b"late");
    drop(tx);
    assert!(replies.message().await.unwrap().is_none(), "the call ends OK after the half-close");
    let status = server.wait_exit(EXIT).await;
    assert!(status.success(), "exit {status}; log:\n{}", server.log());
}

#[tokio::test]
async fn go_server_stops_gracefully_on_sigterm() {
    check_graceful_stop(PeerServer::go(&ServerConfig::named("go-a"))).await;
}

#[tokio::test]
async fn grpc_js_server_stops_gracefully_on_sigterm() {
    check_graceful_stop(PeerServer::grpc_js(&ServerConfig::named("js-a"))).await;
}

#[tokio::test]
async fn load_clients_spread_calls_over_two_go_servers_with_round_robin() {
    let servers = [PeerServer::go(&ServerConfig::named("go-a")), PeerServer::go(&ServerConfig::named("go-b"))];
    let target = ipv4_target(&[servers[0].addr, servers[1].addr]);
    for client in [LoadClient::Grpcio, LoadClient::GrpcJs] {
        let load = Load { lb: "round_robin", concurrency: 8, ..Load::calls(target.clone(), 200) };
        let report = load.run(client).await;
        assert_eq!((report.calls, report.ok()), (200, 200), "{client:?}: {report:?}");
        let (a, b) = (report.backends.get("go-a"), report.backends.get("go-b"));
        assert!(a.is_some_and(|&n| n > 0) && b.is_some_and(|&n| n > 0), "{client:?}: {report:?}");
    }
    let finished: u64 = servers.iter().map(|s| s.stats().calls_finished).sum();
    assert_eq!(finished, 400);
}

/// Failed calls are counted, named by status, and the load goes on.
#[tokio::test]
async fn load_clients_count_failures_by_code() {
    let server = PeerServer::go(&ServerConfig::named("go-a"));
    for client in [LoadClient::Grpcio, LoadClient::GrpcJs] {
        let load = Load { metadata: vec![("x-fail".into(), "14".into())], ..Load::calls(server.addr.to_string(), 20) };
        let report = load.run(client).await;
        assert_eq!(report.codes.get("UNAVAILABLE"), Some(&20), "{client:?}: {report:?}");
        assert_eq!(report.errors[0], "UNAVAILABLE: failed by go-a as asked");
        assert_eq!(report.backends.get("go-a"), Some(&20), "x-backend from the trailers");
    }
}
