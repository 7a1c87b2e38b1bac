//! The identity a verified client certificate proves: its subject alternative names, DNS names and URIs
//! (SPIFFE IDs are URIs), read from the DER certificate with a small reader of the few X.509 fields needed.

/// One subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name, lower-cased.
    Dns(String),
    /// A URI, as written (e.g. `spiffe://cluster.local/ns/shop/sa/web`).
    Uri(String),
}

/// The names a client certificate was issued for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Its DNS and URI subject alternative names, in certificate order.
    pub names: Vec<SubjectAltName>,
}

impl ClientIdentity {
    /// The identity in a DER certificate (rustls verified it already); no names if it cannot be read.
    pub fn from_der(cert: &[u8]) -> Self {
        Self { names: subject_alt_names(cert).unwrap_or_default() }
    }

    /// Whether one of the names is in `allowed`: URIs (entries with `://`) compare exactly, DNS names
    /// without regard to case.
    pub fn is_any_of(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|a| {
            self.names.iter().any(|n| match n {
                SubjectAltName::Uri(u) => a.contains("://") && u == a,
                SubjectAltName::Dns(d) => !a.contains("://") && d.eq_ignore_ascii_case(a),
            })
        })
    }

    /// The names, for messages: `dns:a, uri:spiffe://...`, or `no DNS or URI names`.
    pub fn describe(&self) -> String {
        if self.names.is_empty() {
            return "a certificate without DNS or URI names".into();
        }
        let names: Vec<String> = self
            .names
            .iter()
            .map(|n| match n {
                SubjectAltName::Dns(d) => format!("dns:{d}"),
                SubjectAltName::Uri(u) => format!("uri:{u}"),
            })
            .collect();
        names.join(", ")
    }
}

/// Splits the next DER element (tag, contents) off `input`.
fn next<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    *input = after;
    Some((tag, value))
}

const SEQUENCE: u8 = 0x30;
/// `[3]` EXPLICIT, the extensions of a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1d, 0x11];
/// GeneralName `[2]` dNSName and `[6]` uniformResourceIdentifier, both IMPLICIT IA5String.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;

/// Certificate → tbsCertificate → extensions → subjectAltName → GeneralNames (RFC 5280, 4.1 and 4.2.1.6).
fn subject_alt_names(der: &[u8]) -> Option<Vec<SubjectAltName>> {
    let mut input = der;
    let (SEQUENCE, mut certificate) = next(&mut input)? else { return None };
    let (SEQUENCE, mut tbs) = next(&mut certificate)? else { return None };
    while !tbs.is_empty() {
        let (tag, mut value) = next(&mut tbs)?;
        if tag != EXTENSIONS {
            continue;
        }
        let (SEQUENCE, mut extensions) = next(&mut value)? else { return None };
        while !extensions.is_empty() {
            let (SEQUENCE, mut extension) = next(&mut extensions)? else { return None };
            let (0x06, oid) = next(&mut extension)? else { return None };
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value) = next(&mut extension)?;
            if tag == 0x01 {
                // The optional `critical` BOOLEAN.
                (tag, value) = next(&mut extension)?;
            }
            if tag != 0x04 {
                return None;
            }
            let (SEQUENCE, mut names) = next(&mut value)? else { return None };
            let mut out = Vec::new();
            while !names.is_empty() {
                let (tag, name) = next(&mut names)?;
                let text = || std::str::from_utf8(name).ok().map(str::to_string);
                match tag {
                    DNS_NAME => out.extend(text().map(|d| SubjectAltName::Dns(d.to_ascii_lowercase()))),
                    URI => out.extend(text().map(SubjectAltName::Uri)),
                    _ => {}
                }
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_dns_and_uri_names() {
        let der = cert(vec![
            rcgen::SanType::DnsName("Web.Shop.svc".try_into().unwrap()),
            rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            rcgen::SanType::URI("spiffe://cluster.local/ns/shop/sa/web".try_into().unwrap()),
        ]);
        let id = ClientIdentity::from_der(&der);
        assert_eq!(
            id.names,
            [
                SubjectAltName::Dns("web.shop.svc".into()),
                SubjectAltName::Uri("spiffe://cluster.local/ns/shop/sa/web".into())
            ]
        );
        assert!(id.is_any_of(&["other".into(), "WEB.shop.svc".into()]));
        assert!(id.is_any_of(&["spiffe://cluster.local/ns/shop/sa/web".into()]));
        assert!(!id.is_any_of(&["spiffe://cluster.local/ns/shop/sa/WEB".into()]), "URIs compare exactly");
        assert!(!id.is_any_of(&["spiffe://web.shop.svc".into()]), "a DNS name is not a URI");
        assert_eq!(id.describe(), "dns:web.shop.svc, uri:spiffe://cluster.local/ns/shop/sa/web");
    }

    #[test]
    fn no_names_and_garbage_give_an_empty_identity() {
        assert!(ClientIdentity::from_der(&cert(vec![])).names.is_empty());
        assert!(ClientIdentity::from_der(b"\x30\x82\xff\xff").names.is_empty());
        assert!(ClientIdentity::from_der(&[]).names.is_empty());
        let der = cert(vec![rcgen::SanType::DnsName("a.example".try_into().unwrap())]);
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            // Truncated input never panics.
            let _ = ClientIdentity::from_der(&der[..cut]);
        }
    }
}
