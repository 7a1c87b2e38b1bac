//! A slow reader with a fast writer: the proxy (a separate process, so its memory can be measured alone)
//! must push back instead of buffering.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::process::{switchboard_run, wait_for_listener, Running};
use support::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_keeps_proxy_memory_bounded() {
    let b = backend("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, routes_yaml(&[(ECHO, &[(b.addr, 1)])])).unwrap();
    let (mut cmd, addr, _) = switchboard_run(&["--routes", routes.to_str().unwrap(), "--log", "warn"]);
    let proxy = Running(cmd.stdout(Stdio::null()).spawn().unwrap());
    let pid = proxy.0.id();
    wait_for_listener(addr).await;
    let mut via = client(addr).await;
    via.unary(req(b"warm up")).await.unwrap();
    let baseline = rss_kib(pid);

    // The backend writes 128 MiB as fast as it can; the client reads one 64 KiB message per millisecond.
    let msg = pb::EchoRequest { payload: vec![7u8; 64 << 10], count: 2048 };
    let mut stream = via.server_stream(msg).await.unwrap().into_inner();
    let (mut got, mut peak) = (0usize, baseline);
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.payload.len(), 64 << 10);
        got += 1;
        if got % 32 == 0 {
            peak = peak.max(rss_kib(pid));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(got, 2048);
    let growth_mib = (peak - baseline) as f64 / 1024.0;
    println!("proxy RSS: baseline {baseline} KiB, peak {peak} KiB, growth {growth_mib:.1} MiB for 128 MiB relayed");
    // Windows are 1 MiB per stream and 4 MiB per connection on each side; buffering the stream would be 128 MiB.
    assert!(growth_mib < 24.0, "proxy buffered {growth_mib:.1} MiB");
}
