//! Originating TLS to a backend: the CA its certificate must chain to, the name sent as SNI and verified (or
//! the subject alternative names verified instead), and an optional client certificate (mTLS to the backend).
//! ALPN offers only h2.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, ClientIdentity, Pem, SubjectAltName, TlsError};

/// How to reach one backend over TLS, as configured. Equal settings share connections; settings whose PEM
/// data changed are different settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendTlsSettings {
    /// CA bundle the backend's certificate must chain to.
    pub ca: Pem,
    /// Name sent as SNI, and that the certificate must carry when `subject_alt_names` is empty (a DNS name or
    /// an IP address).
    pub server_name: String,
    /// Names the certificate must carry one of, instead of `server_name` (DNS names compared as host names,
    /// URIs such as SPIFFE IDs exactly).
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Certificate chain and key presented to the backend, if it asks for one.
    pub client_cert: Option<(Pem, Pem)>,
}

/// A loaded backend TLS setting.
#[derive(Clone)]
pub struct BackendTls {
    /// What it was loaded from.
    pub settings: BackendTlsSettings,
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl BackendTls {
    /// Parses the PEM data of `settings` into a TLS client configuration.
    pub fn load(settings: BackendTlsSettings) -> Result<Self, TlsError> {
        let name = ServerName::try_from(settings.server_name.clone())
            .map_err(|e| TlsError::Config(format!("server name {:?}: {e}", settings.server_name)))?;
        let provider = provider();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(settings.ca.roots()?), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", settings.ca.origin)))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if settings.subject_alt_names.is_empty() {
            builder.with_webpki_verifier(webpki)
        } else {
            for n in &settings.subject_alt_names {
                if let SubjectAltName::Dns(d) = n {
                    ServerName::try_from(d.as_str())
                        .map_err(|e| TlsError::Config(format!("subject alt name {d:?}: {e}")))?;
                }
            }
            let verifier = SanVerifier { webpki, names: settings.subject_alt_names.clone() };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match &settings.client_cert {
            Some((cert, key)) => builder.with_client_auth_cert(cert.certs()?, key.key()?).map_err(|e| {
                TlsError::Config(format!("client certificate {} with key {}: {e}", cert.origin, key.origin))
            })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), name, settings })
    }

    /// The TLS handshake over `tcp`, with a message that names what failed.
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let stream = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake (server name {:?}): {e}", self.settings.server_name))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") | None => Ok(stream),
            Some(other) => Err(format!(
                "TLS handshake (server name {:?}): the backend chose ALPN {:?}, not h2",
                self.settings.server_name,
                String::from_utf8_lossy(other)
            )),
        }
    }
}

/// Reads a client certificate chain and its key, checked together (rustls refuses a key that does not match
/// the certificate).
pub fn load_client_cert(cert: &Path, key: &Path) -> Result<(Pem, Pem), TlsError> {
    let (cert_pem, key_pem) = (Pem::read(cert)?, Pem::read(key)?);
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(cert_pem.certs()?, key_pem.key()?)
        .map_err(|e| {
            TlsError::Config(format!("client certificate {} with key {}: {e}", cert.display(), key.display()))
        })?;
    Ok((cert_pem, key_pem))
}

/// Verifies the chain with webpki, and the name against a list of subject alternative names instead of the
/// SNI name (the Gateway API's `subjectAltNames`).
#[derive(Debug)]
struct SanVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    names: Vec<SubjectAltName>,
}

fn wrong_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

fn describe(name: &SubjectAltName) -> String {
    match name {
        SubjectAltName::Dns(d) => d.clone(),
        SubjectAltName::Uri(u) => u.clone(),
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain first (any name error aside): a URI match on an untrusted certificate means nothing.
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_) => {}
            Err(e) if wrong_name(&e) => {}
            Err(e) => return Err(e),
        }
        for name in &self.names {
            let ok = match name {
                // webpki's own host name rules (wildcards, IP addresses).
                SubjectAltName::Dns(d) => match ServerName::try_from(d.as_str()) {
                    Ok(n) => self.webpki.verify_server_cert(end_entity, intermediates, &n, ocsp, now).is_ok(),
                    Err(_) => false,
                },
                SubjectAltName::Uri(_) => ClientIdentity::from_der(end_entity).names.contains(name),
            };
            if ok {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let wanted: Vec<String> = self.names.iter().map(describe).collect();
        let presented: Vec<String> = ClientIdentity::from_der(end_entity).names.iter().map(describe).collect();
        let message = format!(
            "invalid peer certificate: not valid for name {}; it names {}",
            wanted.join(" or "),
            if presented.is_empty() { "no DNS or URI names".into() } else { presented.join(", ") }
        );
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(std::io::Error::other(message)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
