//! Rule filters and policies in the data plane: header modifiers, request mirroring, unary retries.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use support::raw::{raw_backend, raw_call};
use support::*;

fn route(rule: &str) -> String {
    format!("apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: f}}\nspec:\n  rules:\n{rule}")
}

fn backend_ref(a: SocketAddr) -> String {
    format!("{{name: \"{}\", port: {}}}", a.ip(), a.port())
}

#[tokio::test]
async fn request_and_response_header_modifiers() {
    let b = backend("alpha").await;
    let p = proxy(&route(&format!(
        r#"    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{{name: x-set, value: by-proxy}}]
            add: [{{name: x-echo-added, value: "2"}}]
            remove: [x-secret]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{{name: x-served-by, value: switchboard}}]
            remove: [x-backend]
      backendRefs: [{}]
"#,
        backend_ref(b.addr)
    )))
    .await;
    let mut r = tonic::Request::new(req(b"h"));
    r.metadata_mut().insert("x-set", "from-client".parse().unwrap());
    r.metadata_mut().insert("x-echo-added", "1".parse().unwrap());
    r.metadata_mut().insert("x-secret", "hunter2".parse().unwrap());
    let res = client(p.addr).await.unary(r).await.unwrap();
    let seen = b.seen.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("x-set").unwrap(), "by-proxy");
    assert_eq!(seen.get_all("x-echo-added").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(seen.get("x-secret").is_none());
    assert_eq!(res.metadata().get("x-served-by").unwrap(), "switchboard");
    assert!(res.metadata().get("x-backend").is_none());
}

#[tokio::test]
async fn mirror_gets_a_copy_and_never_affects_the_primary() {
    let primary = backend("primary").await;
    let mirror = backend("mirror").await;
    let dead: SocketAddr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let p = proxy(&route(&format!(
        r#"    - filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {}}}
      backendRefs: [{}]
    - matches: [{{method: {{method: ClientStream}}}}]
      filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {}}}
      backendRefs: [{}]
"#,
        backend_ref(mirror.addr),
        backend_ref(primary.addr),
        backend_ref(dead),
        backend_ref(primary.addr),
    )))
    .await;
    let mut via = client(p.addr).await;
    // The mirror's connection opens in the background on first use, so early calls may not be mirrored.
    for _ in 0..20 {
        assert_eq!(via.unary(req(b"m")).await.unwrap().into_inner().backend, "primary");
    }
    eventually("the mirror received copies", || mirror.seen.calls.load(Ordering::SeqCst) >= 10).await;
    assert_eq!(primary.seen.calls.load(Ordering::SeqCst), 20);
    // A mirror that is down changes nothing for the caller.
    for _ in 0..5 {
        let r = via.client_stream(tokio_stream::iter((0..3).map(|_| req(b"c")))).await.unwrap();
        assert_eq!(r.into_inner().received, 3);
    }
}

#[tokio::test]
async fn unary_retries_on_listed_codes_only() {
    let (addr, seen) = raw_backend().await;
    let p = proxy(&route(&format!(
        "    - retry: {{codes: [UNAVAILABLE, \"8\"], attempts: 3}}\n      backendRefs: [{}]\n",
        backend_ref(addr)
    )))
    .await;
    let call = |key: &'static str, times: &'static str, code: &'static str| {
        let addr = p.addr;
        async move {
            raw_call(
                addr,
                "/raw.v1.Raw/Call",
                &[("x-mode", "fail-n"), ("x-key", key), ("x-fail-times", times), ("x-fail-code", code)],
            )
            .await
        }
    };
    let attempts = |key: &str| seen.attempts.lock().unwrap().get(key).copied().unwrap_or(0);

    let r = call("twice", "2", "14").await;
    assert_eq!(r.trailers.expect("success after retries")["grpc-status"], "0");
    assert_eq!(attempts("twice"), 3);

    let r = call("always", "10", "8").await;
    assert!(r.headers_ended_stream);
    assert_eq!(r.headers["grpc-status"], "8", "the last failure is relayed after 3 attempts");
    assert_eq!(attempts("always"), 3);

    let r = call("internal", "1", "13").await;
    assert_eq!(r.headers["grpc-status"], "13", "INTERNAL is not in the list: no retry");
    assert_eq!(attempts("internal"), 1);
}
