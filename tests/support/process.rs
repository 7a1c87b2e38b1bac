//! The switchboard binary as a child process, for tests that need it whole (exit codes, signals, RSS).

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

/// A child process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
