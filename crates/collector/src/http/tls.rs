//! TLS for the HTTP listener (rustls, ring provider) and the accepting side of the server:
//! TCP connections are handshaken in their own tasks (a slow or silent client cannot hold up
//! others) and handed to axum with the peer address and, for mTLS, the SHA-256 of the
//! client certificate.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttTls, TlsFiles};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key", path.display()))
}

pub(crate) fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in read_certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(store)
}

/// The server side: certificate and key, optional client certificates (mTLS) from
/// `client_ca`, HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            // Tokens remain possible: a client without a certificate is let through to the
            // token check.
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The MQTT client side: the broker's CA, optional client certificate.
pub fn mqtt_client_config(tls: &MqttTls) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(&tls.ca_file)?);
    match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(read_certs(c)?, read_key(k)?)
            .map_err(|e| e.to_string()),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// SHA-256 of the verified client certificate (mTLS), if one was presented.
    pub client_cert_sha256: Option<[u8; 32]>,
}

type Io = Either<TlsStream<TcpStream>, TcpStream>;

/// Accepts TCP connections, handshakes TLS when configured, hands them to axum.
#[derive(Debug)]
pub struct CollectorListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(Io, PeerInfo)>,
}

impl CollectorListener {
    /// Starts accepting on `tcp`; stops with `shutdown`.
    pub fn start(
        tcp: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        shutdown: CancellationToken,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, do not spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                match &acceptor {
                    None => {
                        let peer = PeerInfo {
                            addr,
                            client_cert_sha256: None,
                        };
                        if tx.send((Either::Right(stream), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => {
                                    let cert = tls
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .map(|c| Sha256::digest(c.as_ref()).into());
                                    let peer = PeerInfo {
                                        addr,
                                        client_cert_sha256: cert,
                                    };
                                    let _ = tx.send((Either::Left(tls), peer)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(Self { local, rx })
    }
}

impl Listener for CollectorListener {
    type Io = Io;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The acceptor stopped (shutdown): never yield another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(PeerInfo {
            addr: self.local,
            client_cert_sha256: None,
        })
    }
}

impl Connected<IncomingStream<'_, CollectorListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, CollectorListener>) -> Self {
        stream.remote_addr().clone()
    }
}
