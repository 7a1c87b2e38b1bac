//! Interop: a Python grpcio client gets the same results through switchboard as straight from a grpcio server.
//!
//! The Python side lives in `tests/interop/`; it needs the venv that `tests/interop/setup.sh` makes
//! (`make interop-setup`, part of `make test`).

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::peers::{http_get, python_cmd, venv_python, PeerServer, ServerConfig};
use support::process::{free_port, read, Process};

const POLL: Duration = Duration::from_millis(20);

#[test]
fn grpcio_client_through_switchboard_matches_direct() {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();

    let server = PeerServer::grpcio(&ServerConfig::named("grpcio-py"));
    let proxy = Switchboard::start(dir.path(), server.addr);

    let direct = run_client(&python, dir.path(), "direct", server.addr);
    assert!(
        direct.status.success(),
        "the grpcio client failed straight against the grpcio server, so the Python side is broken \
         (not switchboard):\n{}\nserver log:\n{}",
        direct.describe(),
        server.log()
    );
    let via = run_client(&python, dir.path(), "proxy", proxy.listen);
    assert!(
        via.status.success(),
        "the grpcio client failed through switchboard but passed directly: a proxy bug\n{}\nswitchboard log:\n{}",
        via.describe(),
        proxy.process.log()
    );

    let (direct_results, via_results) = (&direct.json["results"], &via.json["results"]);
    assert!(direct_results.as_object().is_some_and(|r| !r.is_empty()), "no results:\n{}", direct.describe());
    let checks: BTreeSet<&String> =
        direct_results.as_object().unwrap().keys().chain(via_results.as_object().unwrap().keys()).collect();
    let differing: Vec<String> = checks
        .into_iter()
        .filter(|k| direct_results[k.as_str()] != via_results[k.as_str()])
        .map(|k| format!("{k}:\n  direct: {}\n  proxy:  {}", direct_results[k.as_str()], via_results[k.as_str()]))
        .collect();
    assert!(differing.is_empty(), "results through switchboard differ from direct ones:\n{}", differing.join("\n"));

    // The one expected difference: switchboard answers an unrouted method itself, naming it.
    let message = via.json["volatile"]["unknown_method"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("/nope.v1.Nope/Call"), "UNIMPLEMENTED message through switchboard: {message:?}");
}

struct Switchboard {
    process: Process,
    listen: SocketAddr,
}

impl Switchboard {
    /// Starts the binary routing Echo to `backend` and waits for `/readyz`. Ports are picked by binding port 0
    /// and released before switchboard binds them, so a lost race is retried with new ports.
    fn start(dir: &Path, backend: SocketAddr) -> Self {
        let routes = dir.join("routes.yaml");
        std::fs::write(
            &routes,
            format!(
                "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    \
                 - matches: [{{method: {{service: switchboard.echo.v1.Echo}}}}]\n      \
                 backendRefs: [{{name: {}, port: {}}}]\n",
                backend.ip(),
                backend.port()
            ),
        )
        .unwrap();
        let mut last_log = String::new();
        for _ in 0..3 {
            let [listen, admin] = [free_port(), free_port()].map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
            let mut process = Process::spawn(
                "switchboard",
                dir,
                Command::new(env!("CARGO_BIN_EXE_switchboard"))
                    .arg("run")
                    .arg("--routes")
                    .arg(&routes)
                    .args(["--listen", &listen.to_string(), "--admin", &admin.to_string()])
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null()),
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while process.exited().is_none() && Instant::now() < deadline {
                if ready(admin) {
                    return Self { process, listen };
                }
                std::thread::sleep(POLL);
            }
            last_log = process.log();
            if !last_log.contains("cannot listen") {
                break;
            }
        }
        panic!("switchboard did not become ready:\n{last_log}");
    }
}

/// Whether `GET /readyz` on the admin listener answers 200.
fn ready(admin: SocketAddr) -> bool {
    http_get(admin, "/readyz").is_ok()
}

struct ClientRun {
    target: SocketAddr,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    json: Value,
}

impl ClientRun {
    fn describe(&self) -> String {
        format!(
            "echo_client.py --target {} exited {}\nstderr:\n{}\nstdout:\n{}",
            self.target, self.status, self.stderr, self.stdout
        )
    }
}

/// Runs `echo_client.py` against `target`, killing it if it takes longer than any check should.
fn run_client(python: &Path, dir: &Path, name: &str, target: SocketAddr) -> ClientRun {
    let stdout_path = dir.join(format!("client-{name}.json"));
    let mut process = Process::spawn(
        &format!("client-{name}"),
        dir,
        python_cmd(python, "echo_client.py")
            .args(["--target", &target.to_string()])
            .stdout(File::create(&stdout_path).unwrap()),
    );
    let status = process.wait_exit_blocking(Duration::from_secs(120));
    let (stdout, stderr) = (read(&stdout_path), process.log());
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    ClientRun { target, status, stdout, stderr, json }
}
