//! Kubernetes `Status` failures, as the apiserver sends them and kube turns them into `kube::Error::Api`.

use serde_json::{json, Value};

use super::store::Res;

/// A failed request: HTTP code, machine-readable reason, message, and what it was about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// (group, plural, name) for `details`.
    pub about: Option<(String, String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, about: None }
    }

    fn about(mut self, res: &Res, name: &str) -> Self {
        self.about = Some((res.group.clone(), res.plural.clone(), name.to_string()));
        self
    }

    pub fn not_found(res: &Res, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified())).about(res, name)
    }

    pub fn already_exists(res: &Res, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified())).about(res, name)
    }

    pub fn conflict(res: &Res, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes \
             to the latest version and try again",
            res.qualified()
        );
        Self::new(409, "Conflict", message).about(res, name)
    }

    /// 410 Expired: a resourceVersion or continue token older than the history.
    pub fn expired(message: &str) -> Self {
        Self::new(410, "Expired", message.into())
    }

    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn invalid(message: &str) -> Self {
        Self::new(422, "Invalid", message.into())
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// 403 as RBAC denies: `services is forbidden: User "..." cannot list resource ...`.
    pub fn forbidden(res: &Res, verb: &str, namespace: Option<&str>) -> Self {
        let scope = namespace.map_or("at the cluster scope".to_string(), |ns| format!("in the namespace \"{ns}\""));
        let message = format!(
            "{} is forbidden: User \"system:serviceaccount:switchboard:switchboard\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
            res.qualified(),
            res.plural,
            res.group
        );
        Self::new(403, "Forbidden", message)
    }

    /// 404 for a group/version or resource the server does not serve (e.g. a CRD that is not installed).
    pub fn not_served() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into())
    }

    /// A failure injected by `fail_next`, with the reason Kubernetes uses for that code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, format!("injected failure ({code} {reason})"))
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((group, kind, name)) = &self.about {
            status["details"] = json!({ "name": name, "group": group, "kind": kind });
        }
        status
    }
}
