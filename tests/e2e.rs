//! End to end: the switchboard binary in cluster mode (KUBECONFIG pointing at the in-process test API
//! server), two real backends; create a GrpcRoute, call through the proxy, move a weight, delete the route.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::apiserver::store::Res;
use support::apiserver::ApiServer;
use support::process::{switchboard_run, Running};
use support::*;
use switchboard::crd::GrpcRoute;

fn backend_objects(api: &ApiServer, name: &str, addr: SocketAddr) {
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": name},
        "spec": {"ports": [{"name": "grpc", "port": 50051}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": format!("{name}-x1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "grpc", "port": addr.port()}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
}

fn route(weight_a: u32, weight_b: u32) -> serde_json::Value {
    json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute", "metadata": {"namespace": "shop", "name": "echo"},
        "spec": {"rules": [{"matches": [{"method": {"service": ECHO}}],
            "backendRefs": [{"name": "svc-a", "port": 50051, "weight": weight_a}, {"name": "svc-b", "port": 50051, "weight": weight_b}]}]}})
}

async fn backends_seen(proxy: SocketAddr, calls: usize) -> Vec<String> {
    let mut c = client(proxy).await;
    let mut seen = Vec::new();
    for _ in 0..calls {
        match c.unary(req(b"x")).await {
            Ok(r) => seen.push(r.into_inner().backend),
            Err(s) => seen.push(format!("{:?}", s.code())),
        }
    }
    seen.sort();
    seen.dedup();
    seen
}

async fn until_seen(proxy: SocketAddr, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = backends_seen(proxy, 20).await;
        if seen == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "wanted {want:?}, saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_in_cluster_mode_follows_grpcroutes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let api = ApiServer::start().await;
    backend_objects(&api, "svc-a", a.addr);
    backend_objects(&api, "svc-b", b.addr);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t, namespace: default}}}}]\ncurrent-context: t\n",
            api.url()
        ),
    )
    .unwrap();
    let (mut cmd, proxy, admin) =
        switchboard_run(&["--lease-namespace", "switchboard", "--identity", "e2e-0", "--log", "warn"]);
    let _proc = Running(
        cmd.env("KUBECONFIG", &kubeconfig).env_remove("SWITCHBOARD_ROUTES").stderr(Stdio::null()).spawn().unwrap(),
    );
    let ready = format!("http://{admin}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while reqwest_status(&ready).await != Some(200) {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No route yet.
    until_seen(proxy, &["Unimplemented"]).await;

    api.apply(route(1, 0));
    until_seen(proxy, &["a"]).await;
    api.apply(route(1, 1));
    until_seen(proxy, &["a", "b"]).await;
    api.apply(route(0, 1));
    until_seen(proxy, &["b"]).await;

    // `explain` reads the same cluster and agrees.
    let (kc, method) = (kubeconfig.clone(), format!("/{ECHO}/Unary"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["explain", "--method", &method, "--json"])
            .env("KUBECONFIG", kc)
            .env_remove("SWITCHBOARD_ROUTES")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let winner = v["candidates"].as_array().unwrap().iter().find(|c| c["verdict"] == "WINNER").unwrap();
    assert_eq!(winner["route"], "shop/echo");
    assert_eq!(winner["backends"], json!(["shop/svc-b:50051"]), "weight-0 backends are not candidates");

    // The leader (the only replica) wrote status; the Lease names it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.get_as::<GrpcRoute>("shop", "echo").and_then(|r| r.status).is_none() {
        assert!(std::time::Instant::now() < deadline, "no status");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = api.get(&Res::new("coordination.k8s.io", "v1", "leases"), "switchboard", "switchboard-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "e2e-0");

    api.delete(&Res::of::<GrpcRoute>(), "shop", "echo");
    until_seen(proxy, &["Unimplemented"]).await;
}

/// GET `url` over plain HTTP/1.1; the status code, or None if nothing answers.
async fn reqwest_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
}
