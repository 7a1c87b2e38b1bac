//! A raw HTTP/2 backend whose misbehaviour tests choose per call with `x-mode`, and a raw HTTP/2 client
//! for checking frames (not just what a gRPC library makes of them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

/// Counts of what the raw backend observed.
#[derive(Debug, Default)]
pub struct RawSeen {
    /// Streams the peer (the proxy) reset while we held them open.
    pub resets: AtomicUsize,
    /// `grpc-timeout` of the last request, if any.
    pub last_timeout: std::sync::Mutex<Option<String>>,
    /// Attempts seen per `x-key` (mode `fail-n`).
    pub attempts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

pub async fn raw_backend() -> (SocketAddr, Arc<RawSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(RawSeen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = s.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((req, mut send))) = conn.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        *seen.last_timeout.lock().unwrap() =
                            req.headers().get("grpc-timeout").map(|v| v.to_str().unwrap().to_string());
                        let mode =
                            req.headers().get("x-mode").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                        let req_headers = req.headers().clone();
                        let mut body = req.into_body();
                        let ok_headers =
                            || http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
                        match mode.as_str() {
                            "reset-refused" => send.send_reset(h2::Reason::REFUSED_STREAM),
                            "reset-cancel" => send.send_reset(h2::Reason::CANCEL),
                            "reset-after-headers" => {
                                let mut body = send.send_response(ok_headers(), false).unwrap();
                                body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false).unwrap();
                                body.send_reset(h2::Reason::ENHANCE_YOUR_CALM);
                            }
                            "trailers-only" => {
                                let res = http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "5")
                                    .header("grpc-message", "no such thing")
                                    .header("x-custom", "kept")
                                    .body(())
                                    .unwrap();
                                send.send_response(res, true).unwrap();
                            }
                            "fail-n" => {
                                // Fails with `x-fail-code` (default 14) the first `x-fail-times` attempts per `x-key`.
                                let h = |k: &str| req_headers.get(k).map(|v| v.to_str().unwrap().to_string());
                                let key = h("x-key").unwrap_or_default();
                                let times: usize = h("x-fail-times").and_then(|v| v.parse().ok()).unwrap_or(1);
                                let code = h("x-fail-code").unwrap_or_else(|| "14".into());
                                let n = {
                                    let mut a = seen.attempts.lock().unwrap();
                                    let n = a.entry(key).or_default();
                                    *n += 1;
                                    *n
                                };
                                if n <= times && h("x-fail-refuse").is_some() {
                                    // The backend did not process the stream: safe to send again.
                                    send.send_reset(h2::Reason::REFUSED_STREAM);
                                } else if n <= times {
                                    let res = match h("x-fail-http") {
                                        // A proxy in front of the backend answering for it, not in gRPC.
                                        Some(status) => http::Response::builder()
                                            .status(status.parse::<u16>().unwrap())
                                            .header("content-type", "text/plain")
                                            .body(())
                                            .unwrap(),
                                        None => http::Response::builder()
                                            .header("content-type", "application/grpc")
                                            .header("grpc-status", code)
                                            .body(())
                                            .unwrap(),
                                    };
                                    send.send_response(res, true).unwrap();
                                } else {
                                    let mut received = 0;
                                    while let Some(Ok(d)) = body.data().await {
                                        received += d.len();
                                        let _ = body.flow_control().release_capacity(d.len());
                                    }
                                    let mut out = send.send_response(ok_headers(), false).unwrap();
                                    out.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false).unwrap();
                                    let mut t = http::HeaderMap::new();
                                    t.insert("grpc-status", "0".parse().unwrap());
                                    t.insert("x-attempt", n.to_string().parse().unwrap());
                                    t.insert("x-request-bytes", received.to_string().parse().unwrap());
                                    out.send_trailers(t).unwrap();
                                }
                            }
                            "hang" => {
                                if std::future::poll_fn(|cx| send.poll_reset(cx)).await.is_ok() {
                                    seen.resets.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            "flood" => {
                                // Sends as much as the proxy's window takes, then waits for the reset.
                                let mut body = send.send_response(ok_headers(), false).unwrap();
                                let chunk = Bytes::from(vec![0u8; 16 << 10]);
                                loop {
                                    body.reserve_capacity(chunk.len());
                                    match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                                        Some(Ok(n)) if n > 0 => {
                                            if body.send_data(chunk.slice(..n), false).is_err() {
                                                break;
                                            }
                                        }
                                        Some(Ok(_)) => {}
                                        _ => break,
                                    }
                                }
                                seen.resets.fetch_add(1, Ordering::SeqCst);
                            }
                            status if status.starts_with("http-") => {
                                let mut res = http::Response::builder().status(status[5..].parse::<u16>().unwrap());
                                if let Some(ct) = req_headers.get("x-content-type") {
                                    res = res.header("content-type", ct.clone());
                                }
                                let mut body = send.send_response(res.body(()).unwrap(), false).unwrap();
                                let _ = body.send_data(Bytes::from_static(b"<html>upstream says no</html>"), true);
                            }
                            "big-headers" => {
                                let res = http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "0")
                                    .header("x-big", "x".repeat(32 << 10))
                                    .body(())
                                    .unwrap();
                                let _ = send.send_response(res, true);
                            }
                            "headers-hang" => {
                                let mut body = send.send_response(ok_headers(), false).unwrap();
                                if std::future::poll_fn(|cx| body.poll_reset(cx)).await.is_ok() {
                                    seen.resets.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            _ => send.send_reset(h2::Reason::INTERNAL_ERROR),
                        }
                    });
                }
            });
        }
    });
    (addr, seen)
}

/// What a raw client saw of one call.
#[derive(Debug)]
pub struct RawResponse {
    pub headers: http::HeaderMap,
    /// The response HEADERS carried END_STREAM (a trailers-only response).
    pub headers_ended_stream: bool,
    pub data_frames: usize,
    pub trailers: Option<http::HeaderMap>,
    pub reset: Option<h2::Reason>,
}

/// Opens a gRPC call to `addr` on a new connection: the request HEADERS are sent, the body is the caller's.
pub async fn open_raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send.send_request(req.body(()).unwrap(), false).unwrap()
}

/// Sends one empty-message gRPC call to `addr` with the given path and headers, and records the frames.
pub async fn raw_call(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let (response, mut body) = open_raw_call(addr, path, headers).await;
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    read_response(response).await
}

/// Records the frames of a call's response.
pub async fn read_response(response: h2::client::ResponseFuture) -> RawResponse {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            return RawResponse {
                headers: Default::default(),
                headers_ended_stream: false,
                data_frames: 0,
                trailers: None,
                reset: e.reason(),
            }
        }
    };
    let (head, mut recv) = response.into_parts();
    let headers_ended_stream = recv.is_end_stream();
    let (mut data_frames, mut reset) = (0, None);
    while let Some(d) = recv.data().await {
        match d {
            Ok(d) => {
                data_frames += 1;
                let _ = recv.flow_control().release_capacity(d.len());
            }
            Err(e) => {
                reset = e.reason();
                break;
            }
        }
    }
    let trailers = if reset.is_none() {
        match recv.trailers().await {
            Ok(t) => t,
            Err(e) => {
                reset = e.reason();
                None
            }
        }
    } else {
        None
    };
    RawResponse { headers: head.headers, headers_ended_stream, data_frames, trailers, reset }
}
