//! Socket options for client and backend connections.

use std::time::Duration;

use tokio::net::TcpStream;

/// No Nagle delay (HTTP/2 frames are written whole), and TCP keep-alive after `keepalive` of silence,
/// probing every third of it three times, so a peer that vanished without a FIN or RST is noticed without
/// HTTP/2 PINGs (which servers ration).
pub fn configure(tcp: &TcpStream, keepalive: Option<Duration>) {
    let _ = tcp.set_nodelay(true);
    if let Some(idle) = keepalive {
        let probes = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 3).max(Duration::from_secs(1)))
            .with_retries(3);
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
            tracing::debug!(error = %e, "cannot set TCP keep-alive");
        }
    }
}
