//! Client-side TLS: calls over TLS with and without client certificates, rules that admit only some client
//! identities (PERMISSION_DENIED otherwise), and a certificate rotated under load with no failed call.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::tls::*;
use support::*;

fn routes(port: u16) -> String {
    format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    \
         - matches: [{{method: {{service: {ECHO}, method: Unary}}}}]\n      \
         clientIdentities: [\"spiffe://test/web\", \"admin.test\"]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n    \
         - matches: [{{method: {{service: {ECHO}}}}}]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n"
    )
}

async fn unary(channel: tonic::transport::Channel) -> Result<String, tonic::Status> {
    let mut c = pb::echo_client::EchoClient::new(channel);
    c.unary(req(b"hi")).await.map(|r| r.into_inner().backend)
}

async fn server_stream(channel: tonic::transport::Channel) -> Result<usize, tonic::Status> {
    let mut c = pb::echo_client::EchoClient::new(channel);
    let stream = c.server_stream(pb::EchoRequest { payload: b"s".to_vec(), count: 3 }).await?.into_inner();
    Ok(tokio_stream::StreamExt::collect::<Vec<_>>(stream).await.len())
}

#[tokio::test]
async fn mtls_rules_admit_only_listed_identities() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("servers"), Ca::new("clients"));
    let files = server_files(dir.path(), &server_ca.issue(&["localhost"]), Some(&client_ca));
    let p = TlsProxy::start(files, &routes(b.addr.port())).await;
    assert!(p.tls.verifies_clients());

    let web = client_ca.issue(&["spiffe://test/web"]);
    let admin = client_ca.issue(&["ADMIN.test"]);
    let batch = client_ca.issue(&["spiffe://test/batch", "batch.test"]);
    let connect = |who: &Issued| tls_channel(p.addr, client_config(&server_ca, Some(who)), "localhost");

    assert_eq!(unary(connect(&web).await.unwrap()).await.unwrap(), "alpha");
    assert_eq!(unary(connect(&admin).await.unwrap()).await.unwrap(), "alpha", "DNS names compare without case");
    let denied = unary(connect(&batch).await.unwrap()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("default/echo rule #0")
            && denied.message().contains("uri:spiffe://test/batch, dns:batch.test"),
        "the message names the rule and what the client presented: {denied:?}"
    );
    assert_eq!(server_stream(connect(&batch).await.unwrap()).await.unwrap(), 3, "a rule without a list admits all");
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 3, "the denied call never reached the backend");

    // A certificate from another CA, or none, does not get through the handshake (in TLS 1.3 the client
    // learns it only after its own side finished, so the failure may show on the first call).
    let stranger = server_ca.issue(&["spiffe://test/web"]);
    for client in [Some(&stranger), None] {
        let config = client_config(&server_ca, client);
        if let Ok(channel) = tls_channel(p.addr, config, "localhost").await {
            let failed = unary(channel).await.unwrap_err();
            assert_ne!(failed.code(), tonic::Code::PermissionDenied, "never reached a rule: {failed:?}");
        }
    }
    let text = p.routes.metrics().render();
    let sample = |series: &str| -> f64 {
        let line = text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
        line.map(|v| v.parse().unwrap()).unwrap_or_default()
    };
    assert!(
        sample("switchboard_downstream_connections_closed_total{reason=\"tls_handshake_failed\"}") >= 2.0,
        "{text}"
    );
    assert!(sample("switchboard_downstream_tls_handshakes_total{result=\"failed\"}") >= 2.0, "{text}");
    assert!(sample("switchboard_downstream_tls_handshakes_total{result=\"ok\"}") >= 2.0, "web and batch: {text}");
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 3, "no call of theirs reached the backend");
    assert!(text.contains("switchboard_local_responses_total{reason=\"permission_denied\"} 1"), "{text}");
}

#[tokio::test]
async fn without_client_certificates_listed_rules_deny_and_others_serve() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("servers");
    let p =
        TlsProxy::start(server_files(dir.path(), &ca.issue(&["localhost", "127.0.0.1"]), None), &routes(b.addr.port()))
            .await;
    let channel = tls_channel(p.addr, client_config(&ca, None), "127.0.0.1").await.unwrap();
    let denied = unary(channel.clone()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("no client certificate"), "{denied:?}");
    assert_eq!(server_stream(channel).await.unwrap(), 3);
    // A client that verifies another name fails its handshake.
    let wrong = tls_channel(p.addr, client_config(&ca, None), "other.example").await;
    assert!(wrong.is_err(), "the server certificate does not name other.example");
}

#[tokio::test]
async fn certificate_rotates_under_load_without_a_failed_call() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("servers");
    let first = ca.issue(&["localhost"]);
    let files = server_files(dir.path(), &first, None);
    let p = TlsProxy::start(files.clone(), &routes(b.addr.port())).await;
    tokio::spawn(p.tls.clone().watch(Duration::from_millis(20)));
    let config = client_config(&ca, None);

    let (ok, failed, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let mut load = Vec::new();
    // New connections all along (each handshake sees whichever certificate is current)...
    for _ in 0..3 {
        let (ok, failed, stop, config, addr) = (ok.clone(), failed.clone(), stop.clone(), config.clone(), p.addr);
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match tls_channel(addr, config.clone(), "localhost").await {
                    Ok(channel) => server_stream(channel).await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // ...and one connection opened before the first rotation, kept to the end.
    let lasting = tls_channel(p.addr, config.clone(), "localhost").await.unwrap();
    let lasting_calls = Arc::new(AtomicU64::new(0));
    {
        let (lasting, calls, failed, stop) = (lasting.clone(), lasting_calls.clone(), failed.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match server_stream(lasting.clone()).await {
                    Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed call on the lasting connection: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let mut served = first.der.clone();
    for round in 0..3 {
        let before = ok.load(Ordering::Relaxed);
        eventually("calls flow", || ok.load(Ordering::Relaxed) >= before + 20).await;
        let next = ca.issue(&["localhost"]);
        // The key first, then the certificate: in between the pair does not match, and the old one serves.
        write_atomic(&files.key, &next.key_pem);
        write_atomic(&files.cert, &next.cert_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            served = handshake(p.addr, config.clone(), "localhost").await.unwrap();
            if served == next.der {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "round {round}: the new certificate never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_ne!(served, first.der);
    let before = lasting_calls.load(Ordering::Relaxed);
    eventually("the lasting connection still serves", || lasting_calls.load(Ordering::Relaxed) > before + 5).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed across three rotations");
    assert!(ok.load(Ordering::Relaxed) >= 60);
}
