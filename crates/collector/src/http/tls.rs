//! TLS for the HTTP listener (built with [`crate::tls`]) and the accepting side of the server:
//! TCP connections are handshaken in their own tasks by the shared accept loop
//! (`linesentry_common::accept`; a slow or silent client cannot hold up others) and handed to axum with the peer address and, for mTLS, the SHA-256 of the
//! client certificate.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use linesentry_common::accept::{accept_loop, AcceptOptions};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;
use crate::tls;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP listener's server side: certificate and key, optional client certificates
/// (mTLS) from `client_ca`, HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    // Tokens remain possible: a client without a certificate is let through to the token
    // check, which is what the general builder's optional client verification is for.
    let mut config = tls::server_config(&files.cert, &files.key, files.client_ca.as_deref())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// SHA-256 of the verified client certificate (mTLS), if one was presented.
    pub client_cert_sha256: Option<[u8; 32]>,
}

type Io = linesentry_common::accept::Io;

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
        let options = AcceptOptions {
            max_connections: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            log_prefix: "",
        };
        tokio::spawn(async move {
            // Each task ends once axum took its connection (axum serves it in a task of its
            // own); those still handing over at shutdown are dropped with the set.
            let _handing_over = accept_loop(tcp, acceptor, options, shutdown, move |c| {
                let tx = tx.clone();
                async move {
                    let client_cert_sha256 = match &c.io {
                        Either::Left(tls) => tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|cert| Sha256::digest(cert.as_ref()).into()),
                        Either::Right(_) => None,
                    };
                    let peer = PeerInfo {
                        addr: c.peer,
                        client_cert_sha256,
                    };
                    let _ = tx.send((c.io, peer)).await;
                }
            })
            .await;
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
