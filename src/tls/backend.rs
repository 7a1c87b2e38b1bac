//! Originating TLS to a backend: the CA its certificate must chain to, the name sent as SNI and verified,
//! and an optional client certificate (mTLS to the backend). ALPN offers only h2.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, read_certs, read_key, read_roots, TlsError};

/// How to reach one backend over TLS, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendTlsSettings {
    /// PEM CA bundle the backend's certificate must chain to.
    pub ca: PathBuf,
    /// Name sent as SNI and that the certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// PEM certificate chain and key presented to the backend, if it asks for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
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
    /// Reads the files of `settings`.
    pub fn load(settings: BackendTlsSettings) -> Result<Self, TlsError> {
        let name = ServerName::try_from(settings.server_name.clone())
            .map_err(|e| TlsError::Config(format!("server name {:?}: {e}", settings.server_name)))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(read_roots(&settings.ca)?);
        let mut config = match &settings.client_cert {
            Some((cert, key)) => builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(|e| {
                TlsError::Config(format!("client certificate {} with key {}: {e}", cert.display(), key.display()))
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
