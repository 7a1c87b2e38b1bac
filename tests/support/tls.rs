//! TLS test parts: a CA that issues server and client certificates (rcgen), PEM files, a proxy in process
//! serving clients over TLS, and tonic clients over rustls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use switchboard::proxy::{shutdown_signal, Forwarder, Pools, Routes, Server, ShutdownTrigger};
use switchboard::tls::{ServerTls, ServerTlsFiles};

/// A certificate authority.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Self { cert: params.self_signed(&key).unwrap(), key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf with these names: `spiffe://...` (any `://`) become URI names, IP addresses IP names, the rest DNS.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.subject_alt_names = names
            .iter()
            .map(|n| {
                if n.contains("://") {
                    SanType::URI((*n).try_into().unwrap())
                } else if let Ok(ip) = n.parse() {
                    SanType::IpAddress(ip)
                } else {
                    SanType::DnsName((*n).try_into().unwrap())
                }
            })
            .collect();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// Writes `contents` to `path` at once (a rename), as a Secret volume swaps its files.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes a server's files into `dir`: `server.pem`, `server.key`, and `clients-ca.pem` when given.
pub fn server_files(dir: &Path, server: &Issued, client_ca: Option<&Ca>) -> ServerTlsFiles {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    write_atomic(&key, &server.key_pem);
    write_atomic(&cert, &server.cert_pem);
    let client_ca = client_ca.map(|ca| {
        let path = dir.join("clients-ca.pem");
        write_atomic(&path, &ca.pem());
        path
    });
    ServerTlsFiles { cert, key, client_ca }
}

/// The proxy in process, serving clients over TLS; its routes are `routes`.
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub routes: Arc<Routes>,
    pub tls: Arc<ServerTls>,
    _shutdown: ShutdownTrigger,
}

impl TlsProxy {
    pub async fn start(files: ServerTlsFiles, yaml: &str) -> Self {
        let metrics = switchboard::metrics::Metrics::new();
        let routes = Arc::new(Routes::with_metrics(
            Pools::new(Default::default()).with_metrics(metrics.pool()),
            metrics.clone(),
        ));
        let tls = Arc::new(ServerTls::load(files).unwrap());
        let server =
            Server::new(Forwarder::new(routes.clone())).tls(tls.clone()).connection_metrics(metrics.connections());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = shutdown_signal();
        tokio::spawn(server.serve(listener, signal));
        let parsed = switchboard::standalone::parse_routes(Path::new("t.yaml"), yaml).unwrap();
        let (_, reports) = switchboard::standalone::apply(&parsed, &routes);
        assert!(reports.iter().all(|r| r.accepted.is_ok()), "{reports:?}");
        Self { addr, routes, tls, _shutdown: shutdown }
    }
}

/// A rustls client config trusting `ca`, presenting `client` if given, offering ALPN h2.
pub fn client_config(ca: &Ca, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert.der().to_vec())).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(switchboard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects over TLS (verifying the server as `name`) and returns the server's leaf certificate.
pub async fn handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>, name: &str) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
    Ok(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default())
}

/// Opens TLS connections for a tonic channel.
#[derive(Clone)]
struct Connect {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for Connect {
    type Response = Io;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let tls = TlsConnector::from(this.config).connect(this.name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// A tonic channel to `addr` over TLS, verifying the server as `name`; one connection.
pub async fn tls_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Channel, tonic::transport::Error> {
    let connect = Connect { addr, config, name: ServerName::try_from(name.to_string()).unwrap() };
    Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_with_connector(connect).await
}

/// A peer server's configuration for TLS with a certificate for `names` from `ca` (the three peers take the
/// same `--tls-*` flags).
pub fn tls_config(
    name: &str,
    dir: &Path,
    ca: &Ca,
    names: &[&str],
    client_ca: Option<&Ca>,
) -> super::peers::ServerConfig {
    let leaf = ca.issue(names);
    let mut config = super::peers::ServerConfig::named(name);
    config.args = vec![
        "--tls-cert".into(),
        pem_path(dir, &format!("{name}.pem"), &leaf.cert_pem).display().to_string(),
        "--tls-key".into(),
        pem_path(dir, &format!("{name}.key"), &leaf.key_pem).display().to_string(),
    ];
    if let Some(client_ca) = client_ca {
        config.args.push("--tls-client-ca".into());
        config.args.push(pem_path(dir, &format!("{name}-clients-ca.pem"), &client_ca.pem()).display().to_string());
    }
    config
}

/// A scratch directory's path for PEM files.
pub fn pem_path(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
