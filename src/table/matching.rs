//! Compiled matchers for one GrpcRoute match: hostname, method (GEP-1016) and headers.

use http::HeaderMap;
use regex::Regex;

use crate::crd::{GrpcHeaderMatch, GrpcMethodMatch, MatchType};

/// A route hostname: exact, or a `*.` wildcard matching any deeper name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// The route has no hostnames: every authority.
    Any,
    /// `foo.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    /// Parses a route hostname (lower-cased).
    pub fn parse(hostname: &str) -> Result<Self, String> {
        let h = hostname.to_ascii_lowercase();
        if h.is_empty() {
            return Err("hostname must not be empty".into());
        }
        if let Some(rest) = h.strip_prefix('*') {
            if !rest.starts_with('.') || rest.len() < 2 || rest[1..].contains('*') {
                return Err(format!("hostname {hostname:?}: a wildcard must be a whole first label (`*.example.com`)"));
            }
            return Ok(Self::Suffix(rest.to_string()));
        }
        if h.contains('*') || h.contains(':') || h.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("hostname {hostname:?}: must be a DNS name (no IP, port or inner wildcard)"));
        }
        Ok(Self::Exact(h))
    }

    /// Whether `host` (lower-case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// (characters of a non-wildcard hostname, characters of the hostname), for precedence.
    pub fn specificity(&self) -> (usize, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Exact(h) => (h.len(), h.len()),
            Self::Suffix(s) => (0, s.len() + 1),
        }
    }
}

/// The method part of a match, per the GEP-1016 table.
#[derive(Clone, Debug)]
pub enum MethodMatch {
    /// No method match: every path.
    Any,
    /// `/S/M`.
    Exact {
        /// The whole path.
        path: String,
    },
    /// `/S/` prefix.
    Service {
        /// `/S/`.
        prefix: String,
    },
    /// `/<any service>/M`.
    Method {
        /// `/M`.
        suffix: String,
    },
    /// Regular expressions over the service and method parts, each matching whole.
    Regex {
        /// Over the service part; None matches any.
        service: Option<Regex>,
        /// Over the method part; None matches any.
        method: Option<Regex>,
    },
}

impl MethodMatch {
    /// Compiles a method match; `service` or `method` must be set.
    pub fn compile(m: &GrpcMethodMatch) -> Result<Self, String> {
        let (service, method) = (m.service.as_deref(), m.method.as_deref());
        if service.is_none() && method.is_none() {
            return Err("a method match must set service or method".into());
        }
        match m.match_type {
            MatchType::Exact => {
                for part in [service, method].into_iter().flatten() {
                    if part.is_empty() || part.contains('/') {
                        return Err(format!("{part:?} is not a valid service or method name"));
                    }
                }
                Ok(match (service, method) {
                    (Some(s), Some(m)) => Self::Exact { path: format!("/{s}/{m}") },
                    (Some(s), None) => Self::Service { prefix: format!("/{s}/") },
                    (None, Some(m)) => Self::Method { suffix: format!("/{m}") },
                    (None, None) => unreachable!("checked above"),
                })
            }
            MatchType::RegularExpression => Ok(Self::Regex {
                service: service.map(whole_regex).transpose()?,
                method: method.map(whole_regex).transpose()?,
            }),
        }
    }

    /// Whether the request path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact { path: p } => p == path,
            Self::Service { prefix } => path.len() > prefix.len() && path.starts_with(prefix.as_str()),
            Self::Method { suffix } => {
                path.ends_with(suffix.as_str())
                    && split_path(path).is_some_and(|(s, m)| !s.is_empty() && m.len() + 1 == suffix.len())
            }
            Self::Regex { service, method } => match split_path(path) {
                Some((s, m)) => {
                    service.as_ref().is_none_or(|r| r.is_match(s)) && method.as_ref().is_none_or(|r| r.is_match(m))
                }
                None => false,
            },
        }
    }

    /// The exact service this match is confined to, if any (for indexing).
    pub fn exact_service(&self) -> Option<&str> {
        match self {
            Self::Exact { path } => split_path(path).map(|(s, _)| s),
            Self::Service { prefix } => Some(&prefix[1..prefix.len() - 1]),
            _ => None,
        }
    }
}

/// Splits `/service/method` into its parts.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (s, m) = rest.split_once('/')?;
    if m.is_empty() || m.contains('/') {
        return None;
    }
    Some((s, m))
}

fn whole_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// A compiled header match.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    name: http::HeaderName,
    value: HeaderValueMatch,
}

#[derive(Clone, Debug)]
enum HeaderValueMatch {
    Exact(String),
    Regex(Regex),
}

impl HeaderMatch {
    /// Compiles a header match.
    pub fn compile(h: &GrpcHeaderMatch) -> Result<Self, String> {
        let name = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("invalid header name {:?}", h.name))?;
        let value = match h.match_type {
            MatchType::Exact => HeaderValueMatch::Exact(h.value.clone()),
            MatchType::RegularExpression => HeaderValueMatch::Regex(whole_regex(&h.value)?),
        };
        Ok(Self { name, value })
    }

    /// Compiles the header matches of one match; each header name (case-insensitive) may appear once. The
    /// API server only rejects exact duplicates (list-map keys): a case-insensitive check in CEL would cost
    /// too much.
    pub fn compile_all(headers: &[GrpcHeaderMatch]) -> Result<Vec<Self>, String> {
        let mut out: Vec<Self> = Vec::with_capacity(headers.len());
        for h in headers {
            let m = Self::compile(h)?;
            if let Some(i) = out.iter().position(|o| o.name == m.name) {
                return Err(format!(
                    "headers {:?} and {:?} name the same header (header names are case-insensitive)",
                    headers[i].name, h.name
                ));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// The header name, lower case.
    pub fn name(&self) -> &http::HeaderName {
        &self.name
    }

    /// Whether any value of the header matches.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| match (&self.value, v.to_str()) {
            (HeaderValueMatch::Exact(want), Ok(got)) => want == got,
            (HeaderValueMatch::Regex(re), Ok(got)) => re.is_match(got),
            (_, Err(_)) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(t: MatchType, s: Option<&str>, m: Option<&str>) -> MethodMatch {
        MethodMatch::compile(&GrpcMethodMatch { match_type: t, service: s.map(Into::into), method: m.map(Into::into) })
            .unwrap()
    }

    #[test]
    fn gep_1016_exact_rows() {
        let both = method(MatchType::Exact, Some("foo.Svc"), Some("Get"));
        assert!(both.matches("/foo.Svc/Get"));
        assert!(!both.matches("/foo.Svc/GetAll"));
        assert!(!both.matches("/foo.Svc2/Get"));

        let service = method(MatchType::Exact, Some("foo.Svc"), None);
        assert!(service.matches("/foo.Svc/Get"));
        assert!(!service.matches("/foo.SvcX/Get"), "service prefix includes the slash");
        assert!(!service.matches("/foo.Svc/"));

        let meth = method(MatchType::Exact, None, Some("Get"));
        assert!(meth.matches("/a.B/Get"));
        assert!(meth.matches("/c.D/Get"));
        assert!(!meth.matches("/a.B/XGet"));
        assert!(!meth.matches("//Get"));
    }

    #[test]
    fn gep_1016_regex_rows() {
        let both = method(MatchType::RegularExpression, Some(r"foo\.v\d"), Some("Get.*"));
        assert!(both.matches("/foo.v1/GetThing"));
        assert!(!both.matches("/foo.v1x/GetThing"), "regex matches the whole service");
        assert!(!both.matches("/xfoo.v1/GetThing"));
        let service = method(MatchType::RegularExpression, Some(r"foo\..*"), None);
        assert!(service.matches("/foo.Bar/Any"));
        assert!(!service.matches("/bar.Foo/Any"));
        let meth = method(MatchType::RegularExpression, None, Some("(Get|List)"));
        assert!(meth.matches("/any.Svc/List"));
        assert!(!meth.matches("/any.Svc/Delete"));
    }

    #[test]
    fn method_match_needs_service_or_method() {
        let err = MethodMatch::compile(&GrpcMethodMatch::default()).unwrap_err();
        assert!(err.contains("service or method"));
        let bad = GrpcMethodMatch { match_type: MatchType::RegularExpression, service: Some("(".into()), method: None };
        assert!(MethodMatch::compile(&bad).unwrap_err().contains("invalid regular expression"));
    }

    #[test]
    fn hostnames() {
        let w = HostMatch::parse("*.Example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert_eq!(w.specificity(), (0, 13));
        let e = HostMatch::parse("api.example.com").unwrap();
        assert_eq!(e.specificity(), (15, 15));
        assert!(HostMatch::parse("a.*.com").is_err());
        assert!(HostMatch::parse("10.0.0.1").is_err());
    }

    #[test]
    fn a_header_is_matched_once_whatever_its_case() {
        let header =
            |name: &str| GrpcHeaderMatch { match_type: MatchType::Exact, name: name.into(), value: "v".into() };
        let err = HeaderMatch::compile_all(&[header("X-Env"), header("x-b"), header("x-env")]).unwrap_err();
        assert_eq!(err, r#"headers "X-Env" and "x-env" name the same header (header names are case-insensitive)"#);
        assert_eq!(HeaderMatch::compile_all(&[header("x-a"), header("x-b")]).unwrap().len(), 2);
    }

    #[test]
    fn headers_are_case_insensitive_and_any_value_matches() {
        let m = HeaderMatch::compile(&GrpcHeaderMatch {
            match_type: MatchType::Exact,
            name: "X-Env".into(),
            value: "canary".into(),
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-env", "prod".parse().unwrap());
        assert!(!m.matches(&h));
        h.append("x-env", "canary".parse().unwrap());
        assert!(m.matches(&h));
        let r = HeaderMatch::compile(&GrpcHeaderMatch {
            match_type: MatchType::RegularExpression,
            name: "x-user".into(),
            value: "u[0-9]+".into(),
        })
        .unwrap();
        h.insert("x-user", "u42".parse().unwrap());
        assert!(r.matches(&h));
        h.insert("x-user", "u42x".parse().unwrap());
        assert!(!r.matches(&h));
    }
}
