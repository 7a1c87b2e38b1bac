//! Backends that rotate or close their connections, as real gRPC servers do on every rollout: GOAWAY at a
//! maximum connection age (grpcio, grpc-go, grpc-js) while a long stream stays open, a graceful stop while
//! another endpoint remains, and streams the backend refuses. No call fails: a connection that sent GOAWAY
//! takes no new streams, and streams the backend never processed are sent again.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::peers::{PeerServer, ServerConfig};
use support::raw::{open_raw_call, raw_backend, read_response};
use support::*;
use tokio_stream::StreamExt;

/// Calls `calls` unary calls over `workers` tasks, each pausing `pace` between calls; returns the failures.
async fn unary_load(addr: SocketAddr, workers: usize, calls: usize, pace: Duration) -> Vec<tonic::Status> {
    let via = client(addr).await;
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (mut c, failures) = (via.clone(), failures.clone());
            tokio::spawn(async move {
                for _ in 0..calls / workers {
                    if let Err(s) = c.unary(req(b"rotate")).await {
                        failures.lock().unwrap().push(s);
                    }
                    tokio::time::sleep(pace).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    failures
}

/// 600 unary calls over about three seconds while the backend closes connections older than a second and a
/// bidi stream stays open on one of them the whole time.
async fn rotation_with_a_long_stream_open(server: PeerServer) {
    let p = proxy(&routes_yaml(&[(ECHO, &[(server.addr, 1)])])).await;
    let mut long_client = client(p.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut long = long_client.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(req(b"first")).await.unwrap();
    assert_eq!(long.next().await.unwrap().unwrap().payload, b"first");

    let failures = unary_load(p.addr, 8, 600, Duration::from_millis(40)).await;
    assert!(
        failures.is_empty(),
        "{} of 600 calls failed, e.g. {:?}\nserver log:\n{}",
        failures.len(),
        failures.first(),
        server.log()
    );

    let goaways = p.routes.metrics().upstream_goaways.with_label_values(&["NO_ERROR"]).get();
    assert!(goaways >= 2, "the backend rotated its connections ({goaways} GOAWAYs seen)");
    // The long stream outlived every rotation on its own connection.
    tx.send(req(b"last")).await.unwrap();
    assert_eq!(long.next().await.unwrap().unwrap().payload, b"last");
}

fn aging(name: &str) -> ServerConfig {
    ServerConfig { max_connection_age: Some(Duration::from_secs(1)), ..ServerConfig::named(name) }
}

#[tokio::test]
async fn grpcio_max_connection_age_fails_no_call() {
    rotation_with_a_long_stream_open(PeerServer::grpcio(&aging("grpcio"))).await;
}

#[tokio::test]
async fn grpc_go_max_connection_age_fails_no_call() {
    rotation_with_a_long_stream_open(PeerServer::go(&aging("go"))).await;
}

#[tokio::test]
async fn grpc_js_max_connection_age_fails_no_call() {
    rotation_with_a_long_stream_open(PeerServer::grpc_js(&aging("grpc-js"))).await;
}

/// One of two endpoints stops gracefully (SIGTERM: GOAWAY, listener closed) under load: calls in flight
/// finish there, new ones go to the other.
async fn graceful_stop_of_one_endpoint(mut leaving: PeerServer, staying: PeerServer) {
    let p = proxy("").await;
    p.set_backend(ECHO, &[leaving.addr, staying.addr], "");
    let load = tokio::spawn(unary_load(p.addr, 8, 600, Duration::from_millis(20)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    leaving.terminate();
    assert!(leaving.wait_exit(Duration::from_secs(10)).await.success(), "{}", leaving.log());
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "{} calls failed, e.g. {:?}", failures.len(), failures.first());
}

#[tokio::test]
async fn grpc_go_graceful_stop_fails_no_call() {
    graceful_stop_of_one_endpoint(PeerServer::go(&ServerConfig::named("a")), PeerServer::go(&ServerConfig::named("b")))
        .await;
}

#[tokio::test]
async fn grpc_js_graceful_stop_fails_no_call() {
    let (a, b) = (PeerServer::grpc_js(&ServerConfig::named("a")), PeerServer::grpc_js(&ServerConfig::named("b")));
    graceful_stop_of_one_endpoint(a, b).await;
}

/// REFUSED_STREAM says the backend processed nothing: the call is sent again, with no retry policy, and the
/// request it had already relayed (three messages) goes with it.
#[tokio::test]
async fn refused_streams_are_sent_again_whole() {
    let (addr, seen) = raw_backend().await;
    let p = proxy(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)])])).await;
    let headers = [("x-mode", "fail-n"), ("x-key", "k"), ("x-fail-times", "1"), ("x-fail-refuse", "1")];
    let (response, mut body) = open_raw_call(p.addr, "/raw.v1.Raw/Call", &headers).await;
    let message = Bytes::from_static(&[0, 0, 0, 0, 3, 1, 2, 3]);
    for end in [false, false, true] {
        body.send_data(message.clone(), end).unwrap();
    }
    let r = read_response(response).await;
    let trailers = r.trailers.clone().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-attempt"], "2");
    assert_eq!(trailers["x-request-bytes"], "24", "all three messages reached the second attempt");
    assert_eq!(seen.attempts.lock().unwrap()["k"], 2);
    assert_eq!(p.routes.metrics().render().matches("switchboard_retries_total{reason=\"unprocessed\"} 1").count(), 1);
}

/// A backend that refuses every stream: the call is sent once more, then the refusal reaches the client.
#[tokio::test]
async fn a_backend_that_always_refuses_is_tried_twice() {
    let (addr, seen) = raw_backend().await;
    let p = proxy(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)])])).await;
    let headers = [("x-mode", "fail-n"), ("x-key", "k"), ("x-fail-times", "100"), ("x-fail-refuse", "1")];
    let r = support::raw::raw_call(p.addr, "/raw.v1.Raw/Call", &headers).await;
    assert_eq!(r.reset, Some(h2::Reason::REFUSED_STREAM), "{r:?}");
    assert_eq!(seen.attempts.lock().unwrap()["k"], 2);
}
