//! TLS with a second gRPC implementation: a Python grpcio client on a secure channel, with and without a
//! client certificate, through switchboard terminating TLS (and mTLS).
//!
//! Needs the venv of `tests/interop/setup.sh` (`make interop-setup`).

mod support;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use support::peers::{python_cmd, venv_python};
use support::tls::*;
use support::*;

/// Runs tests/interop/tls_client.py and returns its JSON outcome.
async fn grpcio_call(target: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>, method: &str) -> Value {
    let mut cmd = python_cmd(&venv_python(), "tls_client.py");
    cmd.args(["--target", &target.to_string(), "--ca", ca.to_str().unwrap(), "--method", method]);
    if let Some((cert, key)) = client {
        cmd.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tls_client.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A client certificate and its key, written to `dir`.
fn client_files(dir: &Path, name: &str, who: &Issued) -> (std::path::PathBuf, std::path::PathBuf) {
    (pem_path(dir, &format!("{name}.pem"), &who.cert_pem), pem_path(dir, &format!("{name}.key"), &who.key_pem))
}

#[tokio::test]
async fn grpcio_secure_channels_with_and_without_client_certificates() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("servers"), Ca::new("clients"));
    let routes = format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    \
         - matches: [{{method: {{service: {ECHO}, method: Unary}}}}]\n      \
         clientIdentities: [\"spiffe://test/web\"]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n    \
         - matches: [{{method: {{service: {ECHO}}}}}]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n",
        port = b.addr.port()
    );
    let ca_pem = pem_path(dir.path(), "servers-ca.pem", &server_ca.pem());
    let client = |name: &str, who: &Issued| client_files(dir.path(), name, who);
    let web = client("web", &client_ca.issue(&["spiffe://test/web"]));
    let batch = client("batch", &client_ca.issue(&["spiffe://test/batch"]));

    // TLS without client certificates.
    let plain_dir = dir.path().join("tls");
    std::fs::create_dir(&plain_dir).unwrap();
    let tls = TlsProxy::start(server_files(&plain_dir, &server_ca.issue(&["localhost"]), None), &routes).await;
    let got = grpcio_call(tls.addr, &ca_pem, None, "ServerStream").await;
    assert_eq!((got["code"].as_str(), got["backend"].as_str()), (Some("OK"), Some("alpha")), "{got}");
    let got = grpcio_call(tls.addr, &ca_pem, None, "Unary").await;
    assert_eq!(got["code"], "PERMISSION_DENIED", "{got}");
    assert!(got["details"].as_str().unwrap().contains("no client certificate"), "{got}");

    // mTLS.
    let mtls_dir = dir.path().join("mtls");
    std::fs::create_dir(&mtls_dir).unwrap();
    let mtls =
        TlsProxy::start(server_files(&mtls_dir, &server_ca.issue(&["localhost"]), Some(&client_ca)), &routes).await;
    let got = grpcio_call(mtls.addr, &ca_pem, Some((web.0.as_path(), web.1.as_path())), "Unary").await;
    assert_eq!((got["code"].as_str(), got["backend"].as_str()), (Some("OK"), Some("alpha")), "{got}");
    let got = grpcio_call(mtls.addr, &ca_pem, Some((batch.0.as_path(), batch.1.as_path())), "Unary").await;
    assert_eq!(got["code"], "PERMISSION_DENIED", "{got}");
    assert!(got["details"].as_str().unwrap().contains("uri:spiffe://test/batch"), "{got}");
    let got = grpcio_call(mtls.addr, &ca_pem, Some((batch.0.as_path(), batch.1.as_path())), "ServerStream").await;
    assert_eq!(got["code"], "OK", "{got}");
    let got = grpcio_call(mtls.addr, &ca_pem, None, "ServerStream").await;
    assert_eq!(got["code"], "UNAVAILABLE", "no client certificate: no handshake: {got}");
    // A server CA the client does not trust.
    let other_ca = pem_path(dir.path(), "other-ca.pem", &Ca::new("other").pem());
    let got = grpcio_call(tls.addr, &other_ca, None, "ServerStream").await;
    assert_eq!(got["code"], "UNAVAILABLE", "{got}");
}

/// A third implementation: @grpc/grpc-js clients (Node's TLS) over mTLS, unary and bidi, admitted or refused
/// by the rule's client identities. Needs the peers of `tests/peers/setup.sh`.
#[tokio::test]
async fn grpc_js_clients_over_mtls() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("servers"), Ca::new("clients"));
    let routes = format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    \
         - matches: [{{method: {{service: {ECHO}}}}}]\n      \
         clientIdentities: [\"spiffe://test/web\"]\n      \
         backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n",
        port = b.addr.port()
    );
    let ca = pem_path(dir.path(), "servers-ca.pem", &server_ca.pem());
    let client = |name: &str, who: &Issued| client_files(dir.path(), name, who);
    let web = client("web", &client_ca.issue(&["spiffe://test/web"]));
    let batch = client("batch", &client_ca.issue(&["spiffe://test/batch"]));
    let mtls_dir = dir.path().join("mtls");
    std::fs::create_dir(&mtls_dir).unwrap();
    let proxy =
        TlsProxy::start(server_files(&mtls_dir, &server_ca.issue(&["localhost"]), Some(&client_ca)), &routes).await;

    let load = |who: &(std::path::PathBuf, std::path::PathBuf), method: &'static str| {
        let mut load = support::peers::Load::calls(format!("127.0.0.1:{}", proxy.addr.port()), 40);
        load.method = method;
        load.concurrency = 4;
        load.options = vec![("grpc.ssl_target_name_override".into(), "localhost".into())];
        load.tls = Some((ca.clone(), Some(who.clone())));
        load.run(support::peers::LoadClient::GrpcJs)
    };
    for method in ["unary", "bidi"] {
        let report = load(&web, method).await;
        assert_eq!(report.codes.get("OK"), Some(&40), "{method}: {report:?}");
        assert_eq!(report.backends.get("alpha"), Some(&40), "{method}: {report:?}");
    }
    let report = load(&batch, "unary").await;
    assert_eq!(report.codes.get("PERMISSION_DENIED"), Some(&40), "{report:?}");
    assert!(report.errors[0].contains("uri:spiffe://test/batch"), "{report:?}");
}
