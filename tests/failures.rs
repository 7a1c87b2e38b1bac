//! Failures: cancels, deadlines, dead backends, backend errors and resets reach the right side, correctly.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::raw::{raw_backend, raw_call};
use support::*;
use tonic::Code;

const RAW: &str = "raw.v1.Raw";

/// The `grpc-timeout` the raw backend last received.
fn sent_timeout(seen: &support::raw::RawSeen) -> Duration {
    let v = seen.last_timeout.lock().unwrap().clone().expect("grpc-timeout sent");
    switchboard::proxy::timeout::parse(&v.parse().unwrap()).unwrap()
}

#[tokio::test]
async fn client_cancel_reaches_the_backend() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut via = client(p.addr).await;
    let mut r = tonic::Request::new(req(b"slow"));
    r.metadata_mut().insert("x-sleep-ms", "10000".parse().unwrap());
    // Dropping the call future makes the client send RST_STREAM(CANCEL) while the backend is still working.
    let call = tokio::spawn(async move { via.unary(r).await });
    eventually("backend got the call", || b.seen.calls.load(Ordering::SeqCst) == 1).await;
    call.abort();
    eventually("backend saw the cancel", || b.seen.cancelled.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn client_cancel_before_the_backend_answers() {
    let (addr, seen) = raw_backend().await;
    let p = proxy(&routes_yaml(&[(RAW, &[(addr, 1)])])).await;
    let task = tokio::spawn(async move { raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "hang")]).await });
    eventually("backend holds the stream", || seen.last_timeout.lock().unwrap().is_none()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.abort(); // drops the client connection: the proxy must reset the backend stream
    eventually("backend stream reset", || seen.resets.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn deadline_expiry_before_and_after_response_headers() {
    let (addr, seen) = raw_backend().await;
    let p = proxy(&routes_yaml(&[(RAW, &[(addr, 1)])])).await;
    let started = std::time::Instant::now();
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "hang"), ("grpc-timeout", "300m")]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(r.headers_ended_stream, "trailers-only DEADLINE_EXCEEDED: {r:?}");
    assert_eq!(r.headers["grpc-status"], "4");
    // The backend got what was left of the budget, and was cancelled when it ran out.
    let sent = sent_timeout(&seen);
    assert!(sent <= Duration::from_millis(300) && sent > Duration::from_millis(200), "remaining budget {sent:?}");
    eventually("backend stream cancelled", || seen.resets.load(Ordering::SeqCst) == 1).await;

    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "headers-hang"), ("grpc-timeout", "200m")]).await;
    assert!(!r.headers_ended_stream);
    assert_eq!(r.trailers.expect("trailers")["grpc-status"], "4");
    eventually("backend stream cancelled", || seen.resets.load(Ordering::SeqCst) == 2).await;
}

#[tokio::test]
async fn rule_timeout_caps_the_call_and_client_deadline_shortens_it() {
    let (addr, seen) = raw_backend().await;
    let yaml = format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: t}}\nspec:\n  rules:\n    - timeout: 250ms\n      backendRefs: [{{name: \"127.0.0.1\", port: {}}}]\n",
        addr.port()
    );
    let p = proxy(&yaml).await;
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "hang")]).await;
    assert_eq!(r.headers["grpc-status"], "4");
    let message = r.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("deadline exceeded"), "{message}");
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "hang"), ("grpc-timeout", "50m")]).await;
    assert_eq!(r.headers["grpc-status"], "4");
    assert!(sent_timeout(&seen) <= Duration::from_millis(50));
}

#[tokio::test]
async fn backend_down_is_unavailable() {
    // A port with nothing listening.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let p = proxy(&routes_yaml(&[(ECHO, &[(dead, 1)])])).await;
    let mut via = client(p.addr).await;
    for _ in 0..3 {
        let err = via.unary(req(b"x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains(&dead.to_string()), "{}", err.message());
    }
    // A raw look: the proxy's own error is a trailers-only response, never a bare HTTP error.
    let r = raw_call(p.addr, "/switchboard.echo.v1.Echo/Unary", &[]).await;
    assert!(r.headers_ended_stream && r.data_frames == 0);
    assert_eq!(r.headers["grpc-status"], "14");
}

#[tokio::test]
async fn backend_comes_back_after_backoff() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = proxy(&routes_yaml(&[(ECHO, &[(addr, 1)])])).await;
    let mut via = client(p.addr).await;
    assert_eq!(via.unary(req(b"x")).await.unwrap_err().code(), Code::Unavailable);
    let b = backend_on("late", tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match via.unary(req(b"x")).await {
            Ok(r) => {
                assert_eq!(r.into_inner().backend, "late");
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::Unavailable),
        }
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn backend_trailers_only_error_is_relayed_exactly() {
    let (addr, _) = raw_backend().await;
    let p = proxy(&routes_yaml(&[(RAW, &[(addr, 1)])])).await;
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "trailers-only")]).await;
    assert!(r.headers_ended_stream, "still trailers-only after the proxy: {r:?}");
    assert_eq!(r.data_frames, 0, "no empty DATA frame added");
    assert_eq!(r.headers["grpc-status"], "5");
    assert_eq!(r.headers["grpc-message"], "no such thing");
    assert_eq!(r.headers["x-custom"], "kept");

    // The same through tonic.
    let b = backend("alpha").await;
    p.set_routes(&routes_yaml(&[(ECHO, &[(b.addr, 1)])]));
    let mut r = tonic::Request::new(req(b"x"));
    r.metadata_mut().insert("x-fail", "7".parse().unwrap());
    let err = client(p.addr).await.unary(r).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn backend_resets_reach_the_client_with_the_spec_mapping() {
    let (addr, _) = raw_backend().await;
    let p = proxy(&routes_yaml(&[(RAW, &[(addr, 1)])])).await;
    for (mode, reason) in [
        ("reset-refused", h2::Reason::REFUSED_STREAM),
        ("reset-cancel", h2::Reason::CANCEL),
        ("reset-after-headers", h2::Reason::ENHANCE_YOUR_CALM),
    ] {
        let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", mode)]).await;
        assert_eq!(r.reset, Some(reason), "{mode}: {r:?}");
    }
    // And what a gRPC client makes of them.
    let channel = channel(p.addr).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for (mode, code) in [("reset-refused", Code::Unavailable), ("reset-cancel", Code::Cancelled)] {
        grpc.ready().await.unwrap();
        let mut r = tonic::Request::new(req(b""));
        r.metadata_mut().insert("x-mode", mode.parse().unwrap());
        let codec = tonic_prost::ProstCodec::<pb::EchoRequest, pb::EchoReply>::default();
        let err = grpc.unary(r, http::uri::PathAndQuery::from_static("/raw.v1.Raw/Call"), codec).await.unwrap_err();
        assert_eq!(err.code(), code, "{mode}");
    }
}
