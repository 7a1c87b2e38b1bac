//! Calls of all four kinds through the proxy give the same results as direct calls.

mod support;

use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn all_four_call_kinds_match_direct_calls() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut direct = client(b.addr).await;
    let mut via = client(p.addr).await;

    let d = direct.unary(req(b"hello")).await.unwrap();
    let v = via.unary(req(b"hello")).await.unwrap();
    assert_eq!(v.metadata().get("x-backend").unwrap(), "alpha");
    assert_eq!(d.into_inner(), v.into_inner());

    let server_req = pb::EchoRequest { payload: b"s".to_vec(), count: 50 };
    let d: Vec<_> = direct.server_stream(server_req.clone()).await.unwrap().into_inner().collect().await;
    let v: Vec<_> = via.server_stream(server_req).await.unwrap().into_inner().collect().await;
    assert_eq!(v.len(), 50);
    assert_eq!(
        d.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        v.into_iter().map(Result::unwrap).collect::<Vec<_>>()
    );

    let msgs = || tokio_stream::iter((0..20u8).map(|i| req(&[i; 100])));
    let d = direct.client_stream(msgs()).await.unwrap().into_inner();
    let v = via.client_stream(msgs()).await.unwrap().into_inner();
    assert_eq!(v.received, 20);
    assert_eq!(d, v);

    let d: Vec<_> = direct.bidi_stream(msgs()).await.unwrap().into_inner().collect().await;
    let v: Vec<_> = via.bidi_stream(msgs()).await.unwrap().into_inner().collect().await;
    assert_eq!(v.len(), 20);
    assert_eq!(
        d.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        v.into_iter().map(Result::unwrap).collect::<Vec<_>>()
    );
}

/// Bidi with half-close: the client finishes sending while still receiving.
#[tokio::test]
async fn bidi_half_close_then_receive() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut via = client(p.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut replies = via.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..3u8 {
        tx.send(req(&[i])).await.unwrap();
        let r = replies.next().await.unwrap().unwrap();
        assert_eq!(r.payload, [i]);
    }
    tx.send(req(b"last")).await.unwrap();
    drop(tx); // END_STREAM from the client while the response is still open
    let r = replies.next().await.unwrap().unwrap();
    assert_eq!(r.payload, b"last");
    assert!(replies.next().await.is_none(), "the backend's trailers end the stream after the half-close");
}

#[tokio::test]
async fn unknown_method_is_unimplemented_with_a_message() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[("other.v1.Svc", &[(b.addr, 1)])])).await;
    let err = client(p.addr).await.unary(req(b"x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("/switchboard.echo.v1.Echo/Unary"), "{}", err.message());
    assert_eq!(b.seen.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn health_is_served_by_switchboard_itself() {
    let p = proxy(&routes_yaml(&[])).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(p.addr).await);
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(r.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn custom_and_binary_metadata_cross_both_ways() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut via = client(p.addr).await;
    let mut r = tonic::Request::new(req(b"m"));
    r.metadata_mut().insert("x-echo-text", "hello world".parse().unwrap());
    r.metadata_mut()
        .insert_bin("x-echo-data-bin", tonic::metadata::MetadataValue::from_bytes(&[0, 159, 146, 150, 255]));
    let res = via.unary(r).await.unwrap();
    assert_eq!(res.metadata().get("x-echo-text").unwrap(), "hello world");
    assert_eq!(
        res.metadata().get_bin("x-echo-data-bin").unwrap().to_bytes().unwrap().as_ref(),
        &[0, 159, 146, 150, 255]
    );
    let seen = b.seen.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("x-echo-text").unwrap(), "hello world");
    assert_eq!(seen.get("te").unwrap(), "trailers", "te: trailers is kept");

    // Error trailers with custom and binary metadata (a trailers-only response from tonic).
    let mut r = tonic::Request::new(req(b"m"));
    r.metadata_mut().insert("x-fail", "9".parse().unwrap());
    let err = via.unary(r).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "failed by alpha as asked");
    assert_eq!(err.metadata().get("x-backend").unwrap(), "alpha");
    assert_eq!(err.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 1, 2, 255]);
}

#[tokio::test]
async fn large_messages() {
    let b = backend("alpha").await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(b.addr, 1)])])).await;
    let mut via = client(p.addr).await;
    let big: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let r = via.unary(req(&big)).await.unwrap().into_inner();
    assert!(r.payload == big, "8 MiB message came back intact");

    // 200 MiB over one client stream, in 1 MiB messages.
    let chunk = vec![0xabu8; 1 << 20];
    let stream = tokio_stream::iter((0..200).map(move |_| req(&chunk)));
    let r = via.client_stream(stream).await.unwrap().into_inner();
    assert_eq!(r.received, 200);
    assert_eq!(r.backend, format!("alpha:{}", 200u64 << 20));
}
