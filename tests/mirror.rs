//! Mirrors end with their call: when the call ends, however it ends, its mirror stream is reset and the
//! task draining the mirror's answer stops. A thousand cancelled mirrored calls leave nothing behind.

mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use support::raw::raw_backend;
use support::*;
use switchboard::proxy::ServerSettings;

fn gauges(p: &Proxy) -> (i64, i64, i64, i64) {
    let m = p.routes.metrics();
    m.render(); // reads the runtime's task count into its gauge
    (m.active_streams.get(), m.upstream_streams.get(), m.upstream_connections.get(), m.runtime_tasks.get())
}

#[tokio::test]
async fn a_thousand_cancelled_mirrored_calls_leave_no_tasks_streams_or_connections() {
    let primary = backend("primary").await;
    // The mirror takes each call and never answers: only a reset ends its stream.
    let (mirror, seen) = raw_backend().await;
    let mirror_ref = format!("{{name: \"{}\", port: {}}}", mirror.ip(), mirror.port());
    let extra = format!("      filters: [{{type: RequestMirror, requestMirror: {{backendRef: {mirror_ref}}}}}]\n");
    // Every call here is cancelled right after it starts: the rapid-reset limit must not end the connection.
    let settings = ServerSettings { max_premature_resets: u32::MAX, ..Default::default() };
    let p = proxy_full(&routes_yaml_with(&[(ECHO, &[(primary.addr, 1)])], &extra), Default::default(), settings).await;

    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let message = Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a, 0]);
    let call = |send: h2::client::SendRequest<Bytes>| {
        let message = message.clone();
        async move {
            let mut send = send.ready().await.unwrap();
            let request = http::Request::post(format!("http://{}/switchboard.echo.v1.Echo/BidiStream", p.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-mode", "hang")
                .body(())
                .unwrap();
            let (response, mut body) = send.send_request(request, false).unwrap();
            body.send_data(message, false).unwrap();
            let mut recv = response.await.unwrap().into_body();
            let echo = recv.data().await.unwrap().unwrap();
            let _ = recv.flow_control().release_capacity(echo.len());
            // The client is done with the call before it ended: cancel.
            body.send_reset(h2::Reason::CANCEL);
        }
    };
    // The mirror's connection opens in the background on first use; then every call is mirrored.
    call(send.clone()).await;
    eventually("the mirror's connection is up", || p.routes.metrics().upstream_connections.get() == 2).await;
    eventually("the first calls are over", || gauges(&p).0 == 0 && gauges(&p).1 == 0).await;
    let before = gauges(&p);
    let reset_before = seen.resets.load(Ordering::SeqCst);

    for _ in 0..1000 {
        call(send.clone()).await;
    }
    eventually("every mirror stream was reset", || seen.resets.load(Ordering::SeqCst) == reset_before + 1000).await;
    eventually("gauges back where they were", || gauges(&p) == before).await;
    let (active, streams, connections, _) = gauges(&p);
    assert_eq!((active, streams, connections), (0, 0, 2), "no call, no backend stream, the two pooled connections");
    assert_eq!(primary.seen.calls.load(Ordering::SeqCst), 1001);
}
