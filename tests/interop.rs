//! Interop: a Python grpcio client gets the same results through switchboard as straight from a grpcio server.
//!
//! The Python side lives in `tests/interop/`; it needs the venv that `tests/interop/setup.sh` makes
//! (`make interop-setup`, part of `make test`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const POLL: Duration = Duration::from_millis(20);

#[test]
fn grpcio_client_through_switchboard_matches_direct() {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();

    let server = PythonServer::start(&python, dir.path());
    let proxy = Switchboard::start(dir.path(), server.addr);

    let direct = run_client(&python, dir.path(), "direct", server.addr);
    assert!(
        direct.status.success(),
        "the grpcio client failed straight against the grpcio server, so the Python side is broken \
         (not switchboard):\n{}\nserver log:\n{}",
        direct.describe(),
        read(&server.process.log)
    );
    let via = run_client(&python, dir.path(), "proxy", proxy.listen);
    assert!(
        via.status.success(),
        "the grpcio client failed through switchboard but passed directly: a proxy bug\n{}\nswitchboard log:\n{}",
        via.describe(),
        read(&proxy.process.log)
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

/// The venv's Python; fails (never skips) when setup has not run or ran for other pins.
fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    let hint = "run `make test`, or `bash tests/interop/setup.sh`, to install grpcio into .cache/venv";
    assert!(python.exists(), "{} not found: the interop test needs Python grpcio; {hint}", python.display());
    // setup.sh copies the requirements it installed here last, so a stale or interrupted setup shows.
    let installed = std::fs::read(root.join(".cache/venv/.interop-requirements")).ok();
    let wanted = std::fs::read(root.join("tests/interop/requirements.txt")).unwrap();
    assert!(
        installed.as_ref() == Some(&wanted),
        ".cache/venv does not hold the pins of tests/interop/requirements.txt (stale or unfinished setup); {hint}"
    );
    python
}

/// A child process killed when dropped, with its output in a log file.
struct Process {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name: name.to_owned(), child, log }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct PythonServer {
    process: Process,
    addr: SocketAddr,
}

impl PythonServer {
    /// Starts `echo_server.py` on a port the OS picks and waits for it to say which.
    fn start(python: &Path, dir: &Path) -> Self {
        let mut process = Process::spawn(
            "echo_server",
            dir,
            python_cmd(python, "echo_server.py").args(["--port", "0", "--name", "grpcio-py"]).stdout(Stdio::piped()),
        );
        let stdout = process.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let port = line.trim().strip_prefix("listening on ").and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            panic!("echo_server.py did not report its port (stdout {line:?}):\n{}", read(&process.log));
        };
        Self { process, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
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
            let (listen, admin) = (free_port(), free_port());
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
            last_log = read(&process.log);
            if !last_log.contains("cannot listen") {
                break;
            }
        }
        panic!("switchboard did not become ready:\n{last_log}");
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Whether `GET /readyz` on the admin listener answers 200.
fn ready(admin: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&admin, Duration::from_secs(1)) else { return false };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut response = String::new();
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: switchboard\r\nConnection: close\r\n\r\n").is_ok()
        && conn.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = process.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "echo_client.py --target {target} still running after 120s");
        std::thread::sleep(POLL);
    };
    let (stdout, stderr) = (read(&stdout_path), read(&process.log));
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    ClientRun { target, status, stdout, stderr, json }
}

fn python_cmd(python: &Path, script: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(script))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}
