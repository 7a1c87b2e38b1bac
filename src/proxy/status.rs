//! Errors the proxy produces, and the one place they become gRPC statuses.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use tonic::Code;

/// Everything that can end a call inside switchboard (as opposed to a status relayed from a backend).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No route matches the call.
    #[error("unknown method {method}: no route matches")]
    NoRoute {
        /// The `:path` of the call.
        method: String,
    },
    /// The matched rule admits only some client identities, and the client proved none of them.
    #[error("{rule} admits only the client identities it lists; the client presented {presented}")]
    PermissionDenied {
        /// The rule, described.
        rule: String,
        /// What the client presented: its certificate's names, or that it had none.
        presented: String,
    },
    /// The matched rule has no backend with a weight above zero.
    #[error("{rule} has no backends")]
    NoBackends {
        /// The rule, described.
        rule: String,
    },
    /// The chosen backendRef could not be resolved.
    #[error("backend {backend} is unavailable: {reason}")]
    Unresolved {
        /// The backendRef.
        backend: String,
        /// Why.
        reason: String,
    },
    /// The chosen backend has no ready endpoints.
    #[error("backend {backend} has no ready endpoints")]
    NoEndpoints {
        /// The backend.
        backend: String,
    },
    /// Connecting to the endpoint failed (or is backing off after failures).
    #[error("backend {endpoint} is unavailable: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The connection to the backend failed during the call.
    #[error("connection to backend {endpoint} failed: {source}")]
    Upstream {
        /// The endpoint.
        endpoint: String,
        /// The HTTP/2 error.
        source: h2::Error,
    },
    /// The backend answered, but not with gRPC: an HTTP error status or another content-type without a
    /// `grpc-status` (a misrouted call, or a proxy in front of the backend answering for it).
    #[error("backend {endpoint} answered HTTP {status}{}, not gRPC", content_type.as_deref().map(|c| format!(" with content-type {c:?}")).unwrap_or_default())]
    NotGrpc {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The content-type, when it is not gRPC's.
        content_type: Option<String>,
    },
    /// The call's deadline (client `grpc-timeout` or the rule's timeout) passed.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// The request is not a valid gRPC request.
    #[error("{0}")]
    BadRequest(String),
    /// The server is shutting down and takes no new calls.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A status chosen by a handler.
    #[error("{message}")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The message.
        message: String,
    },
}

impl Error {
    /// The gRPC status code for this error: the one mapping from proxy errors to statuses.
    pub fn code(&self) -> Code {
        match self {
            Self::NoRoute { .. } => Code::Unimplemented,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::NoBackends { .. }
            | Self::Unresolved { .. }
            | Self::NoEndpoints { .. }
            | Self::Connect { .. }
            | Self::Upstream { .. }
            | Self::ShuttingDown => Code::Unavailable,
            Self::NotGrpc { status, .. } => code_for_http_status(*status),
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::BadRequest(_) => Code::Internal,
            Self::Status { code, .. } => *code,
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::NoBackends { .. } | Self::Unresolved { .. } | Self::NoEndpoints { .. } => "no_endpoints",
            Self::Connect { .. } => "connect_failed",
            Self::Upstream { .. } => "upstream_failed",
            Self::NotGrpc { .. } => "upstream_not_grpc",
            Self::DeadlineExceeded(_) => "timeout",
            Self::BadRequest(_) => "bad_request",
            Self::ShuttingDown => "shutting_down",
            Self::Status { .. } => "handler",
        }
    }
}

/// The `grpc-status` and `grpc-message` trailers for a status.
pub fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert("grpc-status", HeaderValue::from(code as i32));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(percent_encode(message))) {
            h.insert("grpc-message", v);
        }
    }
    h
}

/// A trailers-only response (HEADERS with END_STREAM) carrying `code` and `message`.
pub fn trailers_only(code: Code, message: &str) -> Response<()> {
    let mut res = Response::new(());
    let headers = res.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.extend(status_trailers(code, message));
    res
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec asks: bytes outside 0x20..=0x7E, and `%`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The gRPC status for an HTTP response without `grpc-status` (gRPC's "HTTP to gRPC Status Code Mapping";
/// a 200 that is not gRPC has no entry there, so it is UNKNOWN, as grpc-go makes it).
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The gRPC status a client derives from an RST_STREAM code (gRPC HTTP/2 spec, "Errors").
pub fn code_for_reset(reason: h2::Reason) -> Code {
    match reason {
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("no route: /a.B/C 100%"), "no route: /a.B/C 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn trailers_only_has_content_type_and_status() {
        let r = trailers_only(Code::Unimplemented, "unknown method /x.Y/Z: no route matches");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(r.headers()["grpc-message"], "unknown method /x.Y/Z: no route matches");
    }

    #[test]
    fn reset_mapping_follows_the_spec() {
        assert_eq!(code_for_reset(h2::Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(code_for_reset(h2::Reason::CANCEL), Code::Cancelled);
        assert_eq!(code_for_reset(h2::Reason::ENHANCE_YOUR_CALM), Code::ResourceExhausted);
        assert_eq!(code_for_reset(h2::Reason::INADEQUATE_SECURITY), Code::PermissionDenied);
        assert_eq!(code_for_reset(h2::Reason::PROTOCOL_ERROR), Code::Internal);
    }

    #[test]
    fn http_statuses_map_as_the_grpc_spec_says() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
        ];
        for (status, code) in table {
            assert_eq!(code_for_http_status(status), code, "HTTP {status}");
            let e = Error::NotGrpc { endpoint: "e".into(), status, content_type: None };
            assert_eq!(e.code(), code);
        }
        let e = Error::NotGrpc { endpoint: "10.0.0.1:80".into(), status: 200, content_type: Some("text/html".into()) };
        assert_eq!(e.to_string(), "backend 10.0.0.1:80 answered HTTP 200 with content-type \"text/html\", not gRPC");
    }

    #[test]
    fn every_error_maps_to_the_documented_code() {
        assert_eq!(Error::NoRoute { method: "/a/b".into() }.code(), Code::Unimplemented);
        assert_eq!(Error::Connect { endpoint: "e".into(), message: "m".into() }.code(), Code::Unavailable);
        assert_eq!(Error::DeadlineExceeded(std::time::Duration::from_secs(1)).code(), Code::DeadlineExceeded);
        assert_eq!(Error::ShuttingDown.code(), Code::Unavailable);
    }
}
