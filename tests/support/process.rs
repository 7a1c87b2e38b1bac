//! Child processes for tests: the switchboard binary whole (exit codes, signals, RSS), and peers with a log.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const EXIT_POLL: Duration = Duration::from_millis(20);

/// A named child process, killed when dropped, with its stderr in a log file.
pub struct Process {
    pub name: String,
    pub child: Running,
    pub log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdin closed and stderr to `DIR/NAME.log`; stdout is the caller's choice.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name: name.to_owned(), child: Running(child), log }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.name))
    }

    /// What the process wrote on stderr so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }

    /// The first `n` lines of the (piped) stdout, within `within`; stdout is drained after them so the process
    /// never blocks on it. Panics with the log when they do not come.
    pub fn stdout_lines(&mut self, n: usize, within: Duration) -> Vec<String> {
        let stdout = self.child.0.stdout.take().unwrap_or_else(|| panic!("{}: stdout is not piped", self.name));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().take(n) {
                let _ = tx.send(line.unwrap_or_default());
            }
            lines.for_each(drop);
        });
        let deadline = Instant::now() + within;
        (0..n)
            .map(|i| {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
                    panic!("{} wrote {i} of {n} stdout lines within {within:?}; its log:\n{}", self.name, self.log())
                })
            })
            .collect()
    }

    /// Sends SIGTERM (with kill(1): the tests have no libc binding).
    pub fn terminate(&self) {
        let pid = self.child.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid} ({}) failed: {status}", self.name);
    }

    /// Waits for the process to exit, polling, so an async test's runtime keeps running meanwhile.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited_by(deadline, within) {
                return status;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Waits for the process to exit, blocking the thread.
    pub fn wait_exit_blocking(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited_by(deadline, within) {
                return status;
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// The exit status if the process ended; panics with its log once `deadline` passed.
    fn exited_by(&mut self, deadline: Instant, within: Duration) -> Option<ExitStatus> {
        let status = self.exited();
        assert!(
            status.is_some() || Instant::now() < deadline,
            "{} still running after {within:?}; its log:\n{}",
            self.name,
            self.log()
        );
        status
    }
}

/// A file's text, or a note saying why it cannot be read (for failure messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `switchboard run` with free gRPC and admin ports on loopback, plus `args`.
pub fn switchboard_run(args: &[&str]) -> (Command, SocketAddr, SocketAddr) {
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("run").args(args).args(["--listen", &grpc.to_string(), "--admin", &admin.to_string()]);
    (cmd, grpc, admin)
}

/// Waits until something accepts connections on `addr` (10 s at most).
pub async fn wait_for_listener(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `switchboard run` with `args` on ports the kernel picks (no race with other processes for a port that
/// was free a moment ago) and JSON logs in `dir`; returns once it serves, with its gRPC and admin addresses.
pub async fn spawn_switchboard(dir: &Path, args: &[&str]) -> (Process, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("run").args(args).args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json"]);
    let mut process = Process::spawn("switchboard", dir, &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let serving = process.log().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let addr = |k: &str| v[k].as_str()?.parse::<SocketAddr>().ok();
            (v["message"] == "switchboard serving").then(|| addr("listen").zip(addr("admin"))).flatten()
        });
        if let Some((grpc, admin)) = serving {
            return (process, grpc, admin);
        }
        assert!(process.exited().is_none(), "switchboard exited:\n{}", process.log());
        assert!(Instant::now() < deadline, "switchboard did not start serving:\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
