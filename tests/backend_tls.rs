//! TLS to backends, from `BackendTLS` documents in the routes file: a grpcio server over TLS (and mTLS) is
//! reached; a CA that did not issue its certificate, or a name it does not carry, fails the call with
//! UNAVAILABLE and a message that says so.
//!
//! Needs the venv of `tests/interop/setup.sh` (`make interop-setup`) and the peers of `tests/peers/setup.sh`.

mod support;

use std::path::Path;
use std::time::Duration;

use support::peers::PeerServer;
use support::tls::*;
use support::*;

/// A grpcio echo server over TLS with a certificate for `backend.test`, requiring client certificates from
/// `client_ca` when given.
fn grpcio_tls(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> PeerServer {
    grpcio_tls_named(dir, ca, &["backend.test"], client_ca)
}

/// Like [`grpcio_tls`], with a certificate for `names` (DNS names and URIs).
fn grpcio_tls_named(dir: &Path, ca: &Ca, names: &[&str], client_ca: Option<&Ca>) -> PeerServer {
    PeerServer::grpcio(&tls_config("grpcio-tls", dir, ca, names, client_ca))
}

/// The proxy (cleartext to clients) loading a routes file that sends Echo to `backend` over TLS with `tls`
/// (the BackendTLS spec's lines after `backends`).
async fn proxy_to(dir: &Path, backend: std::net::SocketAddr, tls: &str) -> Proxy {
    let yaml = format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    \
         - matches: [{{method: {{service: {ECHO}}}}}]\n      backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n\
         ---\napiVersion: switchboard.dev/v1alpha1\nkind: BackendTLS\nmetadata: {{name: echo-tls}}\nspec:\n  \
         backends: [{{name: \"127.0.0.1\", port: {port}}}]\n{tls}",
        port = backend.port()
    );
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = proxy("").await;
    switchboard::standalone::load(&path, &p.routes).unwrap();
    p
}

async fn unary(p: &Proxy) -> Result<String, tonic::Status> {
    client(p.addr).await.unary(req(b"hi")).await.map(|r| r.into_inner().backend)
}

#[tokio::test]
async fn backends_over_tls_are_verified_by_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backends");
    let server = grpcio_tls(dir.path(), &ca, None);
    pem_path(dir.path(), "ca.pem", &ca.pem());
    pem_path(dir.path(), "other-ca.pem", &Ca::new("other").pem());

    let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n  serverName: backend.test\n").await;
    assert_eq!(unary(&p).await.unwrap(), "grpcio-tls");

    let p = proxy_to(dir.path(), server.addr, "  caFile: other-ca.pem\n  serverName: backend.test\n").await;
    let e = unary(&p).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("TLS handshake") && e.message().contains("invalid peer certificate"), "{e:?}");

    let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n  serverName: other.test\n").await;
    let e = unary(&p).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("other.test") && e.message().contains("not valid for name"), "{e:?}");

    // Without serverName the backendRef's name (here an IP address the certificate lacks) is verified.
    let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n").await;
    assert_eq!(unary(&p).await.unwrap_err().code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn subject_alt_names_are_verified_instead_of_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backends");
    let server = grpcio_tls_named(dir.path(), &ca, &["backend.test", "spiffe://td/ns/shop/sa/backend"], None);
    pem_path(dir.path(), "ca.pem", &ca.pem());
    let with_sans = |sans: &str| format!("  caFile: ca.pem\n  serverName: sni.only\n  subjectAltNames: {sans}\n");

    // The SNI name is not on the certificate; one of the listed names is.
    for sans in ["[spiffe://td/ns/shop/sa/backend]", "[other.test, Backend.Test]", "[nowhere.test, backend.test]"] {
        let p = proxy_to(dir.path(), server.addr, &with_sans(sans)).await;
        assert_eq!(unary(&p).await.map_err(|e| format!("{sans}: {e:?}")).unwrap(), "grpcio-tls");
    }
    for sans in ["[spiffe://td/ns/shop/sa/other]", "[other.test]", "[spiffe://td/ns/shop/sa]"] {
        let p = proxy_to(dir.path(), server.addr, &with_sans(sans)).await;
        let e = unary(&p).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{sans}: {e:?}");
        assert!(e.message().contains("not valid for name"), "{sans}: {e:?}");
    }
    // A listed name on a certificate from another CA is no proof.
    pem_path(dir.path(), "ca.pem", &Ca::new("other").pem());
    let p = proxy_to(dir.path(), server.addr, &with_sans("[spiffe://td/ns/shop/sa/backend]")).await;
    let e = unary(&p).await.unwrap_err();
    assert!(e.message().contains("invalid peer certificate"), "{e:?}");
}

#[tokio::test]
async fn a_changed_ca_file_is_used_without_touching_the_routes_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backends");
    let server = grpcio_tls(dir.path(), &ca, None);
    let ca_file = pem_path(dir.path(), "ca.pem", &Ca::new("old").pem());
    let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n  serverName: backend.test\n").await;
    assert_eq!(unary(&p).await.unwrap_err().code(), tonic::Code::Unavailable, "the old CA did not issue it");

    let routes_file = dir.path().join("routes.yaml");
    let before = std::fs::read(&routes_file).unwrap();
    tokio::spawn(switchboard::standalone::watch(routes_file.clone(), p.routes.clone(), Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_atomic(&ca_file, &ca.pem());
    let mut last = String::new();
    for _ in 0..100 {
        match unary(&p).await {
            Ok(backend) => {
                assert_eq!(backend, "grpcio-tls");
                assert_eq!(std::fs::read(&routes_file).unwrap(), before);
                return;
            }
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new CA was never used: {last}");
}

#[tokio::test]
async fn backends_that_require_client_certificates_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients) = (Ca::new("backends"), Ca::new("proxies"));
    let server = grpcio_tls(dir.path(), &ca, Some(&clients));
    pem_path(dir.path(), "ca.pem", &ca.pem());
    let me = clients.issue(&["spiffe://test/switchboard"]);
    pem_path(dir.path(), "me.pem", &me.cert_pem);
    pem_path(dir.path(), "me.key", &me.key_pem);

    let tls = "  caFile: ca.pem\n  serverName: backend.test\n  clientCertFile: me.pem\n  clientKeyFile: me.key\n";
    let p = proxy_to(dir.path(), server.addr, tls).await;
    assert_eq!(unary(&p).await.unwrap(), "grpcio-tls");

    let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n  serverName: backend.test\n").await;
    let e = unary(&p).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "without a client certificate: {e:?}");
}

/// grpc-go and grpc-js servers over TLS that require a client certificate: switchboard's handshake (ALPN h2,
/// TLS 1.3 or 1.2, its client certificate) is one they accept, and calls of every kind go through.
///
/// Needs the peers of `tests/peers/setup.sh` (`make peers-setup`).
#[tokio::test]
async fn grpc_go_and_grpc_js_servers_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients) = (Ca::new("backends"), Ca::new("proxies"));
    let me = clients.issue(&["spiffe://test/switchboard"]);
    pem_path(dir.path(), "ca.pem", &ca.pem());
    pem_path(dir.path(), "me.pem", &me.cert_pem);
    pem_path(dir.path(), "me.key", &me.key_pem);
    let tls = "  caFile: ca.pem\n  serverName: backend.test\n  clientCertFile: me.pem\n  clientKeyFile: me.key\n";
    let go = PeerServer::go(&tls_config("go-tls", dir.path(), &ca, &["backend.test"], Some(&clients)));
    let js = PeerServer::grpc_js(&tls_config("grpc-js-tls", dir.path(), &ca, &["backend.test"], Some(&clients)));
    for (server, name) in [(&go, "go-tls"), (&js, "grpc-js-tls")] {
        let p = proxy_to(dir.path(), server.addr, tls).await;
        assert_eq!(unary(&p).await.map_err(|e| format!("{name}: {e:?}")).unwrap(), name);
        let mut c = client(p.addr).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for m in [&b"a"[..], b"b", b"c"] {
            tx.send(req(m)).await.unwrap();
        }
        drop(tx);
        let replies = c.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        let replies: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(replies).await;
        assert_eq!(replies.len(), 3, "{name}: {replies:?}");
        assert!(replies.iter().all(|r| r.is_ok()), "{name}: {replies:?}");

        let p = proxy_to(dir.path(), server.addr, "  caFile: ca.pem\n  serverName: backend.test\n").await;
        let e = unary(&p).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{name} without a client certificate: {e:?}");
    }
}

#[test]
fn backend_tls_documents_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    let doc = |spec: &str| {
        format!("apiVersion: switchboard.dev/v1alpha1\nkind: BackendTLS\nmetadata: {{name: t}}\nspec:\n{spec}")
    };
    let cases = [
        (doc("  backends: [{name: a, port: 1}]\n  caFile: missing.pem\n"), "missing.pem"),
        (doc("  backends: [{name: a, port: 1}]\n  caFile: ca.pem\n  clientCertFile: c.pem\n"), "go together"),
        (doc("  backends: [{name: a, port: 1}]\n  caFile: ca.pem\n  sni: x\n"), "unknown field"),
    ];
    pem_path(dir.path(), "ca.pem", &Ca::new("ca").pem());
    for (text, expected) in cases {
        std::fs::write(&path, &text).unwrap();
        let file = switchboard::standalone::read_file(&path).map_err(|e| e.to_string());
        let result =
            file.and_then(|f| switchboard::standalone::policies(&path, &f).map(|_| ()).map_err(|e| e.to_string()));
        let e = result.unwrap_err();
        assert!(e.contains(expected) && e.contains("document 1"), "{expected}: {e}");
    }
}
