//! Header edits from `RequestHeaderModifier` and `ResponseHeaderModifier` filters.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::crd::HeaderModifier;

/// Compiled header edits, applied as set, then add, then remove.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Compiles a modifier; names and values must be valid HTTP/2 header names and values, and each name
    /// (case-insensitive) may appear once in set, add and remove together. The API server only rejects exact
    /// duplicates within one list (list-map keys): a case-insensitive check in CEL would cost too much.
    pub fn compile(m: &HeaderModifier) -> Result<Self, String> {
        one_action_per_header(m)?;
        let pair = |h: &crate::crd::HttpHeader| -> Result<(HeaderName, HeaderValue), String> {
            let name = header_name(&h.name)?;
            let value =
                HeaderValue::from_str(&h.value).map_err(|_| format!("invalid value for header {:?}", h.name))?;
            Ok((name, value))
        };
        Ok(Self {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: m.remove.iter().map(|n| header_name(n)).collect::<Result<_, _>>()?,
        })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// Gateway API `HTTPHeaderFilter`: "Only one action for a given header name is permitted".
fn one_action_per_header(m: &HeaderModifier) -> Result<(), String> {
    let names = m
        .set
        .iter()
        .map(|h| ("set", h.name.as_str()))
        .chain(m.add.iter().map(|h| ("add", h.name.as_str())))
        .chain(m.remove.iter().map(|n| ("remove", n.as_str())));
    let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
    for (list, name) in names {
        if let Some((first_list, first)) = seen.insert(name.to_ascii_lowercase(), (list, name)) {
            return Err(if first_list == list {
                format!("{list} names header {first:?} twice (as {name:?}; header names are case-insensitive)")
            } else {
                format!(
                    "header {name:?} is in both {first_list} and {list}: \
                     a header name may appear in only one of set, add and remove"
                )
            });
        }
    }
    Ok(())
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    let lower = name.to_ascii_lowercase();
    let refused = |why: &str| Err(format!("header {name:?} cannot be modified: {why}"));
    if lower.starts_with(':') {
        return refused("it is an HTTP/2 pseudo-header");
    }
    match lower.as_str() {
        "host" => return refused("HTTP/2 carries the authority in :authority"),
        // RFC 9113 §8.2.2: an HTTP/2 message with one of these is malformed (h2 refuses to send it).
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => {
            return refused("connection-specific headers are not allowed in HTTP/2 (RFC 9113 §8.2.2)")
        }
        // The one exception, and only as `te: trailers`: gRPC requires exactly that on every request.
        "te" => return refused("gRPC requires `te: trailers`, the only TE HTTP/2 allows (RFC 9113 §8.2.2)"),
        _ => {}
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::HttpHeader;

    #[test]
    fn set_add_remove() {
        let edits = HeaderEdits::compile(&HeaderModifier {
            set: vec![HttpHeader { name: "X-Set".into(), value: "s".into() }],
            add: vec![HttpHeader { name: "x-add".into(), value: "2".into() }],
            remove: vec!["x-gone".into()],
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", "old".parse().unwrap());
        h.insert("x-add", "1".parse().unwrap());
        h.insert("x-gone", "bye".parse().unwrap());
        edits.apply(&mut h);
        assert_eq!(h["x-set"], "s");
        assert_eq!(h.get_all("x-add").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(!h.contains_key("x-gone"));
    }

    fn rejected(m: HeaderModifier) -> String {
        HeaderEdits::compile(&m).unwrap_err()
    }

    fn header(name: &str) -> HttpHeader {
        HttpHeader { name: name.into(), value: "v".into() }
    }

    #[test]
    fn rejects_pseudo_and_connection_specific_headers() {
        for (bad, why) in [
            (":path", "pseudo-header"),
            ("Host", ":authority"),
            ("connection", "connection-specific"),
            ("Keep-Alive", "connection-specific"),
            ("proxy-connection", "connection-specific"),
            ("transfer-encoding", "connection-specific"),
            ("Upgrade", "connection-specific"),
            ("te", "te: trailers"),
        ] {
            for m in [
                HeaderModifier { remove: vec![bad.into()], ..Default::default() },
                HeaderModifier { set: vec![header(bad)], ..Default::default() },
                HeaderModifier { add: vec![header(bad)], ..Default::default() },
            ] {
                let err = rejected(m);
                assert!(err.contains(&format!("header {bad:?} cannot be modified")) && err.contains(why), "{err}");
            }
        }
        assert!(rejected(HeaderModifier { remove: vec!["bad header".into()], ..Default::default() })
            .contains("invalid header name"));
    }

    #[test]
    fn one_action_per_header_name_whatever_its_case() {
        let twice = rejected(HeaderModifier { set: vec![header("x-a"), header("X-A")], ..Default::default() });
        assert_eq!(twice, r#"set names header "x-a" twice (as "X-A"; header names are case-insensitive)"#);
        let twice = rejected(HeaderModifier { remove: vec!["X-Gone".into(), "x-gone".into()], ..Default::default() });
        assert!(twice.starts_with("remove names header \"X-Gone\" twice"), "{twice}");
        for (m, message) in [
            (
                HeaderModifier { set: vec![header("x-a")], add: vec![header("X-a")], ..Default::default() },
                "both set and add",
            ),
            (
                HeaderModifier { set: vec![header("x-a")], remove: vec!["X-A".into()], ..Default::default() },
                "both set and remove",
            ),
            (
                HeaderModifier { add: vec![header("x-a")], remove: vec!["x-a".into()], ..Default::default() },
                "both add and remove",
            ),
        ] {
            let err = rejected(m);
            assert!(err.contains(message) && err.contains("only one of set, add and remove"), "{err}");
        }
        let distinct =
            HeaderModifier { set: vec![header("x-a")], add: vec![header("x-b")], remove: vec!["x-c".into()] };
        assert!(HeaderEdits::compile(&distinct).is_ok());
    }
}
