//! Header edits from `RequestHeaderModifier` and `ResponseHeaderModifier` filters.

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
    /// Compiles a modifier; names and values must be valid HTTP/2 header names and values.
    pub fn compile(m: &HeaderModifier) -> Result<Self, String> {
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

fn header_name(name: &str) -> Result<HeaderName, String> {
    let lower = name.to_ascii_lowercase();
    let invalid = || format!("invalid header name {name:?}");
    if lower.starts_with(':') || matches!(lower.as_str(), "host" | "connection" | "te" | "transfer-encoding") {
        return Err(format!("header {name:?} cannot be modified"));
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| invalid())
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

    #[test]
    fn rejects_pseudo_and_hop_headers() {
        for bad in [":path", "connection", "bad header"] {
            let m = HeaderModifier { remove: vec![bad.into()], ..Default::default() };
            assert!(HeaderEdits::compile(&m).is_err(), "{bad}");
        }
    }
}
