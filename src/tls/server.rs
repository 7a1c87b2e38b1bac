//! Terminating client TLS: certificate and key (and, for mTLS, the CA bundle that client certificates must
//! chain to) from files, reloaded when they change. Each handshake takes the config current at that moment,
//! so a rotation never touches open connections; a change that does not load is reported and the previous
//! config keeps serving.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::{provider, read_certs, read_key, read_roots, TlsError};

/// Where the client-side TLS material lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle: when set, every client must present a certificate that chains to it (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key].into_iter().chain(&self.client_ca)
    }

    /// A digest of the files' contents (a file that cannot be read counts as its error).
    fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for path in self.paths() {
            match std::fs::read(path) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().hash(&mut h),
            }
        }
        h.finish()
    }
}

/// The current server config, swapped whole when the files change.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Digest of the files the last reload attempt read.
    seen: Mutex<u64>,
}

impl ServerTls {
    /// Loads the files; fails if they cannot be used.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let seen = files.digest();
        let config = build(&files)?;
        Ok(Self { files, current: ArcSwap::from_pointee(config), seen: Mutex::new(seen) })
    }

    /// Whether clients must present certificates.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current config.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads if the files changed since the last attempt: `Ok(true)` when a new config now serves.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = self.files.digest();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == digest {
            return Ok(false);
        }
        // Recorded even on failure: a half-written rotation is retried when the files change again.
        *seen = digest;
        let config = build(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(true)
    }

    /// Checks the files every `interval` and swaps in a new config when they change.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "TLS files not reloaded; the previous certificate keeps serving"),
            }
        }
    }
}

fn build(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("client CA bundle {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?).map_err(|e| {
        TlsError::Config(format!("certificate {} with key {}: {e}", files.cert.display(), files.key.display()))
    })?;
    // gRPC is HTTP/2 only; a client that offers no ALPN is served HTTP/2 as well (prior knowledge).
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
