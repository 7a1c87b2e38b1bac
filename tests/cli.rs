//! The binary as a user meets it: flags, bad input, `crd`, `explain`, reload, and SIGTERM draining.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::process::{switchboard_run, wait_for_listener, Running};
use support::*;

fn switchboard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_flags_and_files_give_one_line_and_exit_2() {
    let o = switchboard(&["run", "--routes", "x.yaml", "--listen", "not-an-address"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--listen"), "{}", stderr(&o));

    let o = switchboard(&["run", "--routes", "/nonexistent/routes.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("/nonexistent/routes.yaml"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {name: x}\nspec: {rules: 7}\n",
    )
    .unwrap();
    let o = switchboard(&["run", "--routes", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("bad.yaml") && e.contains("document 1"), "{e}");

    let o = switchboard(&["run", "--routes", "x", "--drain-timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_documents_the_flags() {
    let o = switchboard(&["run", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--routes", "--listen", "--admin", "--drain-timeout", "--max-concurrent-streams", "SWITCHBOARD_LISTEN"]
    {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn crd_command_prints_the_crd() {
    let o = switchboard(&["crd"]);
    assert!(o.status.success());
    let y = String::from_utf8_lossy(&o.stdout);
    assert!(y.contains("kind: CustomResourceDefinition") && y.contains("grpcroutes.switchboard.dev"), "{y}");
}

#[test]
fn explain_text_and_json() {
    let o = switchboard(&[
        "explain",
        "--routes",
        "examples/demo/routes.yaml",
        "--method",
        "/switchboard.echo.v1.Echo/BidiStream",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"], "routed");
    let winner = v["candidates"].as_array().unwrap().iter().find(|c| c["verdict"] == "WINNER").unwrap();
    assert_eq!(winner["rule"], "uploads");
    let o = switchboard(&["explain", "--routes", "examples/demo/routes.yaml", "--method", "/x.Y/Z"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("UNIMPLEMENTED"));
}

/// The routes file is reloaded on change; a broken file keeps the old table; SIGTERM drains streams in
/// flight and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_graceful_shutdown() {
    let a = backend("a").await;
    let b = backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, routes_yaml(&[(ECHO, &[(a.addr, 1)])])).unwrap();
    let (mut cmd, addr, _) =
        switchboard_run(&["--routes", routes.to_str().unwrap(), "--reload-interval", "50ms", "--drain-timeout", "10s"]);
    let mut proc = Running(cmd.stderr(Stdio::null()).spawn().unwrap());
    wait_for_listener(addr).await;
    let mut via = client(addr).await;
    assert_eq!(via.unary(req(b"x")).await.unwrap().into_inner().backend, "a");

    std::fs::write(&routes, routes_yaml(&[(ECHO, &[(b.addr, 1)])])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while via.unary(req(b"x")).await.unwrap().into_inner().backend != "b" {
        assert!(std::time::Instant::now() < deadline, "routes not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&routes, "this: [is not a route").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(via.unary(req(b"x")).await.unwrap().into_inner().backend, "b", "old table keeps serving");

    // A stream in flight when SIGTERM arrives finishes; the process then exits 0.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut replies = via.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(req(b"before")).await.unwrap();
    assert!(replies.message().await.unwrap().is_some());
    let pid = proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New calls are refused with a retryable status: the listener is closed, so a new client cannot connect.
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await;
    assert!(refused.is_err(), "a draining server takes no new connections");
    tx.send(req(b"during drain")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().payload, b"during drain");
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    drop(via);
    let status = tokio::task::spawn_blocking(move || proc.0.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `--log-format json` writes one JSON object per line; a rejected route is one line, calls log nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_line_per_rejected_route() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {name: broken}\nspec:\n  rules:\n    - matches: [{method: {type: RegularExpression, service: \"(\"}}]\n",
    )
    .unwrap();
    let (mut cmd, addr, _) = switchboard_run(&["--routes", routes.to_str().unwrap(), "--log-format", "json"]);
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    wait_for_listener(addr).await;
    let mut via = client(addr).await;
    for _ in 0..5 {
        assert_eq!(via.unary(req(b"x")).await.unwrap_err().code(), tonic::Code::Unimplemented);
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    })
    .await
    .unwrap();
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let rejected: Vec<_> = lines.iter().filter(|l| l["message"] == "route rejected").collect();
    assert_eq!(rejected.len(), 1, "{out}");
    assert_eq!(rejected[0]["route"], "default/broken");
    assert_eq!(rejected[0]["level"], "ERROR");
    assert!(lines.len() <= 6, "calls are not logged by default:\n{out}");
}
