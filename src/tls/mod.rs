//! TLS with rustls and its ring provider (no aws-lc, no OpenSSL: the release binary links only glibc and
//! libgcc): client connections terminated with a certificate reloaded from files, the identity a client
//! certificate proves, connections to backends, and PEM files read into rustls types.

mod backend;
mod identity;
mod policy;
mod server;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

pub use self::backend::{load_client_cert, BackendTls, BackendTlsSettings};
pub use self::identity::{ClientIdentity, SubjectAltName};
pub use self::policy::{
    policy_targets, BackendTLSPolicy, BackendTlsPolicySpec, LocalObjectRef, PolicyError, PolicyStatus,
    PolicySubjectAltName, PolicyTarget, PolicyTargetRef, PolicyValidation,
};
pub use self::server::{ServerTls, ServerTlsFiles};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM data (a file, a ConfigMap key) could not be read or holds nothing usable.
    #[error("{origin}: {message}")]
    File {
        /// Where the data comes from: a file's path, or `ConfigMap ns/name`.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The files were read but rustls refused them together (e.g. a key that does not match its certificate).
    #[error("{0}")]
    Config(String),
}

/// The one crypto provider switchboard uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM data and where it came from. Equal and hashed by its bytes too, so a pool keyed by TLS settings opens
/// new connections when a CA or certificate changes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pem {
    /// A file's path, or `ConfigMap ns/name`: for messages.
    pub origin: String,
    /// The PEM text.
    pub data: Arc<[u8]>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({}, {} bytes)", self.origin, self.data.len())
    }
}

impl Pem {
    /// PEM data from `origin`.
    pub fn new(origin: impl Into<String>, data: impl Into<Arc<[u8]>>) -> Self {
        Self { origin: origin.into(), data: data.into() }
    }

    /// The contents of a file.
    pub fn read(path: &Path) -> Result<Self, TlsError> {
        let data = std::fs::read(path).map_err(|e| file_error(path.display(), format!("cannot read: {e}")))?;
        Ok(Self::new(path.display().to_string(), data))
    }

    /// Every certificate (`CERTIFICATE` section), in order; at least one.
    pub fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(&self.origin, format!("bad PEM: {e:?}")))?;
        if certs.is_empty() {
            return Err(file_error(&self.origin, "no PEM CERTIFICATE in it"));
        }
        Ok(certs)
    }

    /// The first private key (PKCS#8, PKCS#1 or SEC1 section).
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.data)
            .map_err(|e| file_error(&self.origin, format!("no usable PEM private key: {e:?}")))
    }

    /// The certificates as trust anchors. As Go's `AppendCertsFromPEM` and OpenSSL do, a certificate that
    /// cannot be a trust anchor is skipped (system bundles carry a few); a bundle with none is an error.
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let (added, _skipped) = roots.add_parsable_certificates(self.certs()?);
        if added == 0 {
            return Err(file_error(&self.origin, "no usable CA certificate in it"));
        }
        Ok(roots)
    }
}

/// Where the platform's CA bundle is looked for (`SSL_CERT_FILE` first): Debian/Ubuntu/distroless, Fedora/RHEL,
/// openSUSE, Alpine/macOS.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The platform's CA bundle (a BackendTLSPolicy's `wellKnownCACertificates: System`), read once.
pub fn system_ca() -> Option<Pem> {
    static SYSTEM: std::sync::OnceLock<Option<Pem>> = std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            let paths = env.into_iter().chain(SYSTEM_BUNDLES.iter().map(Into::into));
            paths.filter_map(|p| Pem::read(&p).ok()).find(|pem| pem.roots().is_ok())
        })
        .clone()
}

fn file_error(origin: impl std::fmt::Display, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { origin: origin.to_string(), message: message.to_string() }
}

/// Every certificate (`CERTIFICATE` PEM section) of a file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Pem::read(path)?.certs()
}

/// The first private key (PKCS#8, PKCS#1 or SEC1 PEM section) of a file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    Pem::read(path)?.key()
}

/// The certificates of a CA bundle file as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    Pem::read(path)?.roots()
}
