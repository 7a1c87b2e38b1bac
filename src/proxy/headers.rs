//! Header hygiene for relaying: what must not cross a hop.

use http::header::{HeaderMap, HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};

static HOP_BY_HOP: [HeaderName; 5] =
    [CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE, HeaderName::from_static("keep-alive")];

/// Removes connection-specific headers (RFC 9113 §8.2.2). `te: trailers` is kept: gRPC requires it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The common case has none of them; avoid touching the map then.
    if !HOP_BY_HOP.iter().any(|h| headers.contains_key(h)) && headers.get(TE).is_none_or(|v| v == "trailers") {
        if headers.contains_key("proxy-connection") {
            headers.remove("proxy-connection");
        }
        return;
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove("proxy-connection");
    if headers.get(TE).is_some_and(|v| v != "trailers") {
        headers.insert(TE, http::HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_grpc_and_custom_metadata() {
        let mut h = HeaderMap::new();
        h.insert("te", "trailers".parse().unwrap());
        h.insert("content-type", "application/grpc+proto".parse().unwrap());
        h.insert("grpc-timeout", "1S".parse().unwrap());
        h.insert("x-custom-bin", "AAEC".parse().unwrap());
        h.insert("connection", "close".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        let before = h.len();
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), before - 2);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-custom-bin"], "AAEC");
    }
}
