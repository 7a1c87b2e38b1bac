//! A rolling update of switchboard itself: real clients balance over two instances with `round_robin`, one
//! instance gets SIGTERM under load (64 calls in flight), and no call fails. The stopping instance stops
//! accepting connections, sends the two-step GOAWAY, lets its calls finish and exits 0; the client moves to
//! the other instance (and retries, transparently, the calls the GOAWAY says were never processed).

mod support;

use std::time::Duration;

use support::peers::{ipv4_target, Load, LoadClient};
use support::process::spawn_switchboard;
use support::*;

async fn sigterm_one_of_two_under_load(client: LoadClient) {
    let b = backend("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, routes_yaml(&[(ECHO, &[(b.addr, 1)])])).unwrap();
    let args = ["--routes", routes.to_str().unwrap(), "--drain-timeout", "20s"];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut leaving, a, _) = spawn_switchboard(dir_a.path(), &args).await;
    let (staying, b_addr, _) = spawn_switchboard(dir_b.path(), &args).await;

    // Each call takes 20 ms at the backend, so 64 are in flight at any time.
    let load = Load {
        lb: "round_robin",
        concurrency: 64,
        metadata: vec![("x-sleep-ms".into(), "20".into())],
        ..Load::lasting(ipv4_target(&[a, b_addr]), Duration::from_secs(6))
    };
    let run = tokio::spawn(load.run(client));
    tokio::time::sleep(Duration::from_secs(2)).await;
    leaving.terminate();
    let status = leaving.wait_exit(Duration::from_secs(30)).await;
    let report = run.await.unwrap();
    eprintln!("{client:?}: {report:?}");
    assert!(status.success(), "the stopped instance exits 0 after draining: {status}\n{}", leaving.log());
    assert_eq!(report.failed(), 0, "{report:?}\nstaying instance's log:\n{}", staying.log());
    assert!(report.calls > 1000, "the load ran: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_round_robin_over_a_rolling_update_fails_no_call() {
    sigterm_one_of_two_under_load(LoadClient::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_round_robin_over_a_rolling_update_fails_no_call() {
    sigterm_one_of_two_under_load(LoadClient::GrpcJs).await;
}
