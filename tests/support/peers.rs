//! Real gRPC peers as child processes: echo servers in grpc-go, @grpc/grpc-js and Python grpcio, and load
//! clients in grpcio and grpc-js. `tests/peers/setup.sh` (`make peers-setup`) builds the first two and
//! `tests/interop/setup.sh` (`make interop-setup`) installs grpcio; both are part of `make test`. A peer that is
//! not installed fails the test with the command to run: these tests never skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tempfile::TempDir;

use super::process::{read, Process};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const PEERS_HINT: &str = "run `make peers-setup` (bash tests/peers/setup.sh; part of `make test`)";
const GRPCIO_HINT: &str = "run `make interop-setup` (bash tests/interop/setup.sh; part of `make test`)";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// How to start a peer server. Unset fields keep the implementation's own defaults, which is the point of
/// testing against real peers: `ServerConfig::named("a")` is a stock server.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// In `x-backend` and in replies.
    pub name: String,
    /// grpc-go `MaxConnectionAge`, grpc-js and grpcio `grpc.max_connection_age_ms`.
    pub max_connection_age: Option<Duration>,
    /// grpc-go `MaxConnectionAgeGrace`, grpc-js and grpcio `grpc.max_connection_age_grace_ms`.
    pub max_connection_age_grace: Option<Duration>,
    /// grpc-go `MaxConcurrentStreams`, grpc-js and grpcio `grpc.max_concurrent_streams`.
    pub max_concurrent_streams: Option<u32>,
    /// grpc-go only: `keepalive.EnforcementPolicy.MinTime` (grpc-go's default: 5 min).
    pub keepalive_min_time: Option<Duration>,
    /// grpc-go only: `keepalive.EnforcementPolicy.PermitWithoutStream` (grpc-go's default: false).
    pub permit_without_stream: bool,
    /// grpc-js and grpcio only: further server channel options, `("grpc.some_option", "value")`.
    pub options: Vec<(String, String)>,
    /// Further flags of the server (all three take `--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub args: Vec<String>,
}

impl ServerConfig {
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }

    /// The lifecycle settings as the flags of the grpc-go and grpc-js servers (durations Go-style, `250ms`).
    fn lifecycle_flags(&self) -> Vec<(&'static str, String)> {
        let go_duration = |d: Duration| format!("{}ms", d.as_millis());
        [
            ("--max-connection-age", self.max_connection_age.map(go_duration)),
            ("--max-connection-age-grace", self.max_connection_age_grace.map(go_duration)),
            ("--max-concurrent-streams", self.max_concurrent_streams.map(|n| n.to_string())),
            ("--keepalive-min-time", self.keepalive_min_time.map(go_duration)),
        ]
        .into_iter()
        .filter_map(|(flag, value)| Some((flag, value?)))
        .collect()
    }

    /// Panics on the grpc-go-only keepalive fields: the other servers' enforcement is not the same setting.
    fn assert_no_go_keepalive(&self, peer: &str) {
        assert!(
            self.keepalive_min_time.is_none() && !self.permit_without_stream,
            "keepalive_min_time and permit_without_stream are grpc-go settings; pass {peer} its own `options`"
        );
    }

    /// `--option KEY=VALUE` for each of `options`.
    fn option_args(options: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        options.into_iter().flat_map(|(key, value)| ["--option".to_owned(), format!("{key}={value}")]).collect()
    }
}

/// A peer echo server (switchboard.echo.v1.Echo with the tonic test backend's semantics), killed when dropped.
pub struct PeerServer {
    process: Process,
    pub addr: SocketAddr,
    stats_addr: Option<SocketAddr>,
    _dir: TempDir,
}

impl PeerServer {
    /// The grpc-go 1.33 server (`tests/peers/go`), with its JSON counters (`stats()`).
    pub fn go(config: &ServerConfig) -> Self {
        assert!(config.options.is_empty(), "the grpc-go peer takes no channel options, only the typed fields");
        let mut cmd = Command::new(go_binary());
        cmd.args(["--listen", "127.0.0.1:0", "--stats", "127.0.0.1:0", "--name", &config.name]);
        for (flag, value) in config.lifecycle_flags() {
            cmd.args([flag, &value]);
        }
        if config.permit_without_stream {
            cmd.arg("--permit-without-stream");
        }
        cmd.args(&config.args);
        let (process, lines, dir) = start("go-echo-server", &mut cmd, 2);
        let addr = parse_line(&process, &lines[0], "listening ");
        let stats_addr = Some(parse_line(&process, &lines[1], "stats "));
        Self { process, addr, stats_addr, _dir: dir }
    }

    /// The @grpc/grpc-js server (`tests/peers/node/echo_server.js`); grpc-js enforces no keepalive policy.
    pub fn grpc_js(config: &ServerConfig) -> Self {
        config.assert_no_go_keepalive("grpc-js");
        let mut cmd = node_cmd("echo_server.js");
        cmd.args(["--listen", "127.0.0.1:0", "--name", &config.name]);
        for (flag, value) in config.lifecycle_flags() {
            cmd.args([flag, &value]);
        }
        cmd.args(ServerConfig::option_args(config.options.clone())).args(&config.args);
        let (process, lines, dir) = start("grpc-js-echo-server", &mut cmd, 1);
        let addr = parse_line(&process, &lines[0], "listening ");
        Self { process, addr, stats_addr: None, _dir: dir }
    }

    /// The Python grpcio server (`tests/interop/echo_server.py`). Its semantics differ from the tonic
    /// backend's where tests/interop.rs needs them to (see its docstring).
    pub fn grpcio(config: &ServerConfig) -> Self {
        config.assert_no_go_keepalive("grpcio");
        let mut cmd = python_cmd(&venv_python(), "echo_server.py");
        cmd.args(["--port", "0", "--name", &config.name]).args(&config.args);
        let ms = |d: Duration| d.as_millis().to_string();
        let lifecycle = [
            ("grpc.max_connection_age_ms", config.max_connection_age.map(ms)),
            ("grpc.max_connection_age_grace_ms", config.max_connection_age_grace.map(ms)),
            ("grpc.max_concurrent_streams", config.max_concurrent_streams.map(|n| n.to_string())),
        ];
        let lifecycle = lifecycle.into_iter().filter_map(|(key, value)| Some((key.to_owned(), value?)));
        cmd.args(ServerConfig::option_args(lifecycle.chain(config.options.clone())));
        let (process, lines, dir) = start("grpcio-echo-server", &mut cmd, 1);
        let port = lines[0].strip_prefix("listening on ").and_then(|p| p.parse::<u16>().ok());
        let port = port.unwrap_or_else(|| panic!("echo_server.py said {:?}; its log:\n{}", lines[0], process.log()));
        Self { process, addr: SocketAddr::from(([127, 0, 0, 1], port)), stats_addr: None, _dir: dir }
    }

    /// The grpc-go server's counters now; panics for the other peers, which serve none.
    pub fn stats(&self) -> GoStats {
        let addr = self.stats_addr.unwrap_or_else(|| panic!("{} serves no stats", self.process.name));
        let body = http_get(addr, "/").unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats of {}: {e}: {body:?}", self.process.name))
    }

    /// SIGTERM: grpc-go GracefulStop, grpc-js tryShutdown; grpcio's server just dies (it installs no handler).
    pub fn terminate(&self) {
        self.process.terminate();
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.process.wait_exit(within).await
    }

    /// The server's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The grpc-go server's counters (`tests/peers/go/stats.go`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GoStats {
    pub calls_started: u64,
    pub calls_finished: u64,
    /// Calls whose context was cancelled (client cancel, RST_STREAM, deadline, connection loss) before the
    /// handler returned.
    pub calls_cancelled: u64,
    pub calls_active: u64,
    /// Transport connections accepted since start.
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Connections grpc-go ended with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings").
    pub too_many_pings: u64,
}

/// Starts `cmd` in a fresh directory holding its log and returns its first `lines` stdout lines.
fn start(name: &str, cmd: &mut Command, lines: usize) -> (Process, Vec<String>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::spawn(name, dir.path(), cmd.stdout(Stdio::piped()));
    let lines = process.stdout_lines(lines, START_TIMEOUT);
    (process, lines, dir)
}

fn parse_line(process: &Process, line: &str, prefix: &str) -> SocketAddr {
    let addr = line.strip_prefix(prefix).and_then(|a| a.parse().ok());
    addr.unwrap_or_else(|| {
        panic!("{} said {line:?}, want `{prefix}HOST:PORT`; its log:\n{}", process.name, process.log())
    })
}

/// `.cache/peers/go-echo-server`, checked to be built from the sources in tests/peers/go.
fn go_binary() -> PathBuf {
    let binary = root().join(".cache/peers/go-echo-server");
    assert!(binary.exists(), "{} not found: the grpc-go peer is not built; {PEERS_HINT}", binary.display());
    // setup.sh's stamp: a line of package versions, then the sources it built, concatenated in name order.
    let stamp = std::fs::read(root().join(".cache/peers/go-echo-server.sources")).unwrap_or_default();
    let built = stamp.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root().join("tests/peers/go"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "go"))
        .collect();
    sources.sort();
    let current: Vec<u8> = sources.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert!(built == current, "{} was built from other sources than tests/peers/go; {PEERS_HINT}", binary.display());
    binary
}

/// `node tests/peers/node/SCRIPT`, checked: node_modules must hold what package-lock.json pins.
fn node_cmd(script: &str) -> Command {
    let dir = root().join("tests/peers/node");
    let installed = std::fs::read(dir.join("node_modules/.switchboard-package-lock.json")).ok();
    let wanted = std::fs::read(dir.join("package-lock.json")).unwrap();
    assert!(
        installed.as_ref() == Some(&wanted),
        "tests/peers/node/node_modules does not hold package-lock.json's pins (never installed, stale or \
         unfinished); {PEERS_HINT}"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script));
    cmd
}

/// The venv's Python; fails (never skips) when setup has not run or ran for other pins.
pub fn venv_python() -> PathBuf {
    let python = root().join(".cache/venv/bin/python");
    assert!(python.exists(), "{} not found: Python grpcio is not installed; {GRPCIO_HINT}", python.display());
    // setup.sh copies the requirements it installed here last, so a stale or interrupted setup shows.
    let installed = std::fs::read(root().join(".cache/venv/.interop-requirements")).ok();
    let wanted = std::fs::read(root().join("tests/interop/requirements.txt")).unwrap();
    assert!(
        installed.as_ref() == Some(&wanted),
        ".cache/venv does not hold the pins of tests/interop/requirements.txt (stale or unfinished setup); \
         {GRPCIO_HINT}"
    );
    python
}

/// `python tests/interop/SCRIPT`.
pub fn python_cmd(python: &Path, script: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/interop").join(script)).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

/// A grpcio target naming several addresses (for round_robin): `ipv4:127.0.0.1:P1,127.0.0.1:P2`.
pub fn ipv4_target(addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("ipv4:{}", addrs.join(","))
}

/// Which load client runs a [`Load`].
#[derive(Clone, Copy, Debug)]
pub enum LoadClient {
    /// `tests/interop/load_client.py`.
    Grpcio,
    /// `tests/peers/node/load_client.js`.
    GrpcJs,
}

/// A load of Echo calls, run by a real client (see the scripts' docs for each field's flag).
#[derive(Clone, Debug)]
pub struct Load {
    /// Any grpcio / grpc-js target: `127.0.0.1:P` or [`ipv4_target`].
    pub target: String,
    /// `pick_first` or `round_robin`.
    pub lb: &'static str,
    /// `unary`, `server`, `client` or `bidi`.
    pub method: &'static str,
    /// Calls in flight.
    pub concurrency: usize,
    /// How many calls in all; or else
    pub calls: Option<u64>,
    /// how long to keep calling.
    pub duration: Option<Duration>,
    /// Replies (server) or requests (client, bidi) per call.
    pub count: u32,
    /// Each call's deadline.
    pub timeout: Duration,
    /// Request metadata on every call, such as `("x-sleep-ms", "100")`.
    pub metadata: Vec<(String, String)>,
    /// Client channel options, such as `("grpc.keepalive_time_ms", "1000")`.
    pub options: Vec<(String, String)>,
    /// grpc-js only: TLS with this CA bundle, and this client certificate and key.
    pub tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
}

impl Load {
    /// `calls` unary calls to `target`, one at a time, pick_first.
    pub fn calls(target: impl Into<String>, calls: u64) -> Self {
        Self {
            target: target.into(),
            lb: "pick_first",
            method: "unary",
            concurrency: 1,
            calls: Some(calls),
            duration: None,
            count: 3,
            timeout: Duration::from_secs(10),
            metadata: Vec::new(),
            options: Vec::new(),
            tls: None,
        }
    }

    /// Unary calls to `target` for `duration`.
    pub fn lasting(target: impl Into<String>, duration: Duration) -> Self {
        Self { calls: None, duration: Some(duration), ..Self::calls(target, 0) }
    }

    /// Runs the load to its end on a blocking thread (so an in-process proxy on the test's runtime keeps
    /// serving) and returns the client's report. Panics when the client fails to run or report.
    pub async fn run(self, client: LoadClient) -> LoadReport {
        tokio::task::spawn_blocking(move || self.run_blocking(client)).await.unwrap()
    }

    fn run_blocking(&self, client: LoadClient) -> LoadReport {
        let client_kind = client;
        let (name, mut cmd) = match client {
            LoadClient::Grpcio => ("load_client.py", python_cmd(&venv_python(), "load_client.py")),
            LoadClient::GrpcJs => ("load_client.js", node_cmd("load_client.js")),
        };
        cmd.args(["--target", &self.target, "--lb", self.lb, "--method", self.method]);
        cmd.args(["--concurrency", &self.concurrency.to_string(), "--count", &self.count.to_string()]);
        cmd.args(["--timeout", &self.timeout.as_secs_f64().to_string()]);
        match (self.calls, self.duration) {
            (Some(calls), None) => cmd.args(["--calls", &calls.to_string()]),
            (None, Some(d)) => cmd.args(["--duration", &d.as_secs_f64().to_string()]),
            _ => panic!("a Load needs exactly one of `calls` and `duration`: {self:?}"),
        };
        for (flag, pairs) in [("--metadata", &self.metadata), ("--option", &self.options)] {
            for (key, value) in pairs {
                cmd.args([flag, &format!("{key}={value}")]);
            }
        }
        if let Some((ca, client)) = &self.tls {
            assert!(matches!(client_kind, LoadClient::GrpcJs), "TLS is load_client.js's only");
            cmd.arg("--tls-ca").arg(ca);
            if let Some((cert, key)) = client {
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report.json");
        let mut process = Process::spawn(name, dir.path(), cmd.stdout(std::fs::File::create(&out).unwrap()));
        // Generous: the load's own length plus every call's deadline and the client's start-up.
        let status = process.wait_exit_blocking(self.duration.unwrap_or_default() + self.timeout * 2 + START_TIMEOUT);
        let stdout = read(&out);
        assert!(status.success(), "{name} {self:?} exited {status}\nstdout: {stdout}\nstderr:\n{}", process.log());
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{name} printed no report ({e}):\n{stdout}\nstderr:\n{}", process.log()))
    }
}

/// What a load client printed.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadReport {
    pub calls: u64,
    /// Calls by status code name (`OK`, `UNAVAILABLE`, ...).
    pub codes: BTreeMap<String, u64>,
    /// The first few failures, `CODE: details`.
    pub errors: Vec<String>,
    /// Calls by the `x-backend` that answered them.
    pub backends: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
}

impl LoadReport {
    pub fn ok(&self) -> u64 {
        self.codes.get("OK").copied().unwrap_or(0)
    }

    pub fn failed(&self) -> u64 {
        self.calls - self.ok()
    }
}

/// A plain HTTP/1.1 GET; the body when the answer is 200.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("unexpected answer: {response:?}"))),
    }
}
