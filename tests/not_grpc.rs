//! A backend (or a proxy in front of it) that answers in plain HTTP rather than gRPC: the client gets the
//! status the gRPC spec's HTTP-to-gRPC mapping gives, metrics count it, and the rule's retry policy sees
//! that status.

mod support;

use support::raw::{raw_backend, raw_call};
use support::*;
use switchboard::proxy::PoolSettings;

#[tokio::test]
async fn http_answers_become_grpc_statuses_by_the_spec() {
    let (addr, _) = raw_backend().await;
    let p = proxy(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)])])).await;
    // (mode, content-type, grpc-status the client must get)
    let cases = [
        ("http-503", "text/plain", "14"),
        ("http-502", "text/html", "14"),
        ("http-504", "text/plain", "14"),
        ("http-429", "text/plain", "14"),
        ("http-404", "text/plain", "12"),
        ("http-401", "text/plain", "16"),
        ("http-403", "text/plain", "7"),
        ("http-400", "text/plain", "13"),
        ("http-500", "text/plain", "2"),
        // HTTP 200 that is not gRPC has no entry in the table: UNKNOWN, as grpc-go makes it.
        ("http-200", "text/html", "2"),
        // A gRPC content-type does not make an error status gRPC.
        ("http-503", "application/grpc", "14"),
    ];
    for (mode, ct, want) in cases {
        let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", mode), ("x-content-type", ct)]).await;
        assert!(r.headers_ended_stream, "{mode} {ct}: a trailers-only answer, got {r:?}");
        assert_eq!(r.headers["grpc-status"], want, "{mode} {ct}: {r:?}");
        assert_eq!(r.headers["content-type"], "application/grpc", "{mode}");
        let message = r.headers["grpc-message"].to_str().unwrap();
        assert!(message.contains(&format!("answered HTTP {}", &mode[5..])), "{mode}: {message}");
        assert!(message.contains("not gRPC"), "{message}");
    }
    let metrics = p.routes.metrics().render();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_local_responses_total{reason=\"upstream_not_grpc\"}"))
        .unwrap_or_else(|| panic!("no upstream_not_grpc count in:\n{metrics}"));
    assert!(line.ends_with(&format!(" {}", cases.len())), "{line}");
    let unavailable = metrics
        .lines()
        .find(|l| l.starts_with("grpc_server_handled_total") && l.contains("grpc_code=\"Unavailable\""))
        .unwrap();
    assert!(unavailable.ends_with(" 5"), "the mapped code is what the call counts as: {unavailable}");
}

/// A tonic client reads the mapped status like any other gRPC error.
#[tokio::test]
async fn a_grpc_client_sees_the_mapped_status() {
    let (addr, _) = raw_backend().await;
    let p = proxy(&routes_yaml(&[(ECHO, &[(addr, 1)])])).await;
    let mut r = tonic::Request::new(req(b"x"));
    r.metadata_mut().insert("x-mode", "http-503".parse().unwrap());
    r.metadata_mut().insert("x-content-type", "text/html".parse().unwrap());
    let status = client(p.addr).await.unary(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("answered HTTP 503 with content-type \"text/html\", not gRPC"), "{status:?}");
}

#[tokio::test]
async fn the_retry_policy_retries_a_mapped_status() {
    let (addr, seen) = raw_backend().await;
    let retry = "      retry: {codes: [UNAVAILABLE], attempts: 3}\n";
    let p = proxy(&routes_yaml_with(&[("raw.v1.Raw", &[(addr, 1)])], retry)).await;
    let headers = [("x-mode", "fail-n"), ("x-key", "k"), ("x-fail-times", "2"), ("x-fail-http", "503")];
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &headers).await;
    assert_eq!(r.trailers.expect("answered after two retries")["grpc-status"], "0");
    assert_eq!(seen.attempts.lock().unwrap()["k"], 3);
    let not_retried = [("x-mode", "fail-n"), ("x-key", "n"), ("x-fail-times", "1"), ("x-fail-http", "404")];
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &not_retried).await;
    assert_eq!(r.headers["grpc-status"], "12", "UNIMPLEMENTED is not in the policy");
    assert_eq!(seen.attempts.lock().unwrap()["n"], 1);
}

/// HTTP 502, 503 and 504 are gateway failures: enough in a row eject the endpoint, and calls go to the one
/// that answers in gRPC.
#[tokio::test]
async fn gateway_errors_eject_the_endpoint() {
    let (bad, _) = raw_backend().await;
    let good = backend("good").await;
    let mut settings = PoolSettings::default();
    settings.outlier.consecutive_failures = 3;
    let p = proxy_with("", settings).await;
    p.set_backend(ECHO, &[bad, good.addr], "");
    let mut via = client(p.addr).await;
    let mut unavailable = 0;
    for _ in 0..40 {
        let mut r = tonic::Request::new(req(b"x"));
        // The raw backend answers 503; the echo backend ignores the header.
        r.metadata_mut().insert("x-mode", "http-503".parse().unwrap());
        match via.unary(r).await {
            Ok(res) => assert_eq!(res.into_inner().backend, "good"),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable);
                unavailable += 1;
            }
        }
    }
    assert_eq!(unavailable, 3, "three 503s in a row, then the endpoint is ejected");
    assert_eq!(p.routes.metrics().outlier_ejections.get(), 1);
    assert_eq!(p.routes.metrics().outlier_ejected.get(), 1);
}

/// A backend's response headers above the limit fail the call cleanly; the connection serves on.
#[tokio::test]
async fn oversized_backend_headers_fail_the_call_only() {
    let (addr, _) = raw_backend().await;
    let p = proxy(&routes_yaml(&[("raw.v1.Raw", &[(addr, 1)])])).await;
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "big-headers")]).await;
    assert!(r.headers.get("x-big").is_none(), "{r:?}");
    assert!(r.headers.contains_key("grpc-status") || r.reset.is_some(), "the call ended: {r:?}");
    assert_ne!(r.headers.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"));
    let r = raw_call(p.addr, "/raw.v1.Raw/Call", &[("x-mode", "trailers-only")]).await;
    assert_eq!(r.headers["grpc-status"], "5", "other calls go on");
}
