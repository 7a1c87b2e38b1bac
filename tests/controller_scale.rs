//! The controller at scale (`make bench-controller`, not part of `make test`): 10,000 Services, 10,000
//! EndpointSlices and 1,000 GrpcRoutes in the test API server, the release binary in cluster mode against
//! it. Reports the switchboard process's RSS, the time from start to ready, and the table rebuild time after
//! one EndpointSlice change (from its own reconcile histogram). Figures, not assertions: see README.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::apiserver::ApiServer;
use support::k8s;
use support::peers::http_get;
use support::process::{spawn_switchboard, Process};

const SERVICES: usize = 10_000;
const ROUTES: usize = 1_000;
const NAMESPACES: usize = 50;

/// What a real object also carries: managedFields entries of the writers that touched it.
fn with_managed_fields(mut obj: Value, manager: &str) -> Value {
    obj["metadata"]["managedFields"] = json!([{
        "apiVersion": obj["apiVersion"], "fieldsType": "FieldsV1", "manager": manager, "operation": "Update",
        "time": "2026-01-01T00:00:00Z",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:ports": {".": {},
            "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
            "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}
    }]);
    obj
}

fn seed(api: &ApiServer) {
    for i in 0..SERVICES {
        let ns = format!("team-{}", i % NAMESPACES);
        let name = format!("svc-{i}");
        api.apply(with_managed_fields(
            k8s::service(&ns, &name, &[(Some("grpc"), 80, 8080)]),
            "kubectl-client-side-apply",
        ));
        // Three pods per Service on made-up addresses (no call is made).
        let eps: Vec<(SocketAddr, k8s::State)> = (0..3)
            .map(|p| (SocketAddr::from(([10, (i >> 8) as u8, (i & 0xff) as u8, p as u8 + 1], 8080)), k8s::State::Ready))
            .collect();
        api.apply(with_managed_fields(k8s::slice(&ns, &name, "abcde", "grpc", &eps), "endpointslice-controller"));
    }
    for r in 0..ROUTES {
        let ns = format!("team-{}", (r * 10) % NAMESPACES);
        let refs: Vec<Value> =
            (0..3).map(|k| json!({"name": format!("svc-{}", r * 10 + k * NAMESPACES), "port": 80})).collect();
        api.apply(json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "GrpcRoute",
            "metadata": {"namespace": ns, "name": format!("route-{r}")},
            "spec": {"rules": [{"matches": [{"method": {"service": format!("bench.v1.Service{r}")}}], "backendRefs": refs}]}}));
    }
}

fn rss_mib(p: &Process) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.0.id())).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// (count, sum) of the reconcile histogram.
fn reconciles(admin: SocketAddr) -> (f64, f64) {
    let metrics = http_get(admin, "/metrics").unwrap();
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    (
        value("switchboard_controller_reconcile_duration_seconds_count"),
        value("switchboard_controller_reconcile_duration_seconds_sum"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: make bench-controller"]
async fn ten_thousand_services() {
    let api = ApiServer::start().await;
    let seeding = Instant::now();
    seed(&api);
    eprintln!("seeded {SERVICES} Services, {SERVICES} EndpointSlices, {ROUTES} GrpcRoutes in {:?}", seeding.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: '{}'}}}}]\n\
             users: [{{name: test, user: {{}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n\
             current-context: test\n",
            api.url()
        ),
    )
    .unwrap();
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let started = Instant::now();
    let (process, _grpc, admin) = spawn_switchboard(dir.path(), &["--leader-election", "false"]).await;
    while http_get(admin, "/readyz").is_err() {
        assert!(started.elapsed() < Duration::from_secs(120), "not ready:\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    // Let the first status writes (1,000 routes) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_ready = rss_mib(&process);

    let mut rebuilds = Vec::new();
    let mut rss = vec![(0, rss_ready)];
    for i in 0..60u8 {
        let before = reconciles(admin);
        let eps = [(SocketAddr::from(([10, 255, 0, i + 1], 8080)), k8s::State::Ready)];
        api.apply(k8s::slice("team-0", "svc-0", "abcde", "grpc", &eps));
        let deadline = Instant::now() + Duration::from_secs(10);
        let after = loop {
            let now = reconciles(admin);
            if now.0 > before.0 {
                break now;
            }
            assert!(Instant::now() < deadline, "no rebuild after an EndpointSlice change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        rebuilds.push((after.1 - before.1) / (after.0 - before.0) * 1000.0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        if i % 20 == 19 {
            rss.push((i as usize + 1, rss_mib(&process)));
        }
    }
    rebuilds.sort_by(f64::total_cmp);
    println!(
        "controller scale: {SERVICES} Services, {SERVICES} EndpointSlices (3 endpoints each), {ROUTES} GrpcRoutes"
    );
    println!("  time to ready:          {:.2} s", ready.as_secs_f64());
    for (n, mib) in &rss {
        println!("  RSS after {n:>2} rebuilds:  {mib:.1} MiB");
    }
    println!(
        "  rebuild after one EndpointSlice change: median {:.1} ms, max {:.1} ms ({} changes)",
        rebuilds[rebuilds.len() / 2],
        rebuilds[rebuilds.len() - 1],
        rebuilds.len()
    );
    drop(process);
}
