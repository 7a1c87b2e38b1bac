//! TLS with rustls and its ring provider (no aws-lc, no OpenSSL: the release binary links only glibc and
//! libgcc): client connections terminated with a certificate reloaded from files, the identity a client
//! certificate proves, connections to backends, and PEM files read into rustls types.

mod backend;
mod identity;
mod policy;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

pub use self::backend::{BackendTls, BackendTlsSettings};
pub use self::identity::{ClientIdentity, SubjectAltName};
pub use self::policy::{
    policy_targets, BackendTlsPolicySpec, LocalObjectRef, PolicyError, PolicySubjectAltName, PolicyTarget,
    PolicyTargetRef, PolicyValidation,
};
pub use self::server::{ServerTls, ServerTlsFiles};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
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

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), message: message.to_string() }
}

/// Every certificate (`CERTIFICATE` PEM section) of a file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read certificates: {e:?}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("bad PEM: {e:?}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1 PEM section) of a file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable PEM private key: {e:?}")))
}

/// The certificates of a CA bundle file as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}
