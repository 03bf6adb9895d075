//! rustls client configuration from [`TlsSettings`]: CA file (or the system's roots) and
//! an optional client certificate for mutual TLS. Only the `ring` provider is built in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use linesentry_common::pem::{self, PemError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// TLS material; paths are resolved against the config file's directory but not opened.
/// Without `ca_file` the system roots apply. `client_cert` and `client_key` come together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The process-wide crypto provider; idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn file_error(what: &'static str, e: &PemError) -> TlsError {
    TlsError::File {
        what,
        path: e.path.display().to_string(),
        reason: e.problem.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem::read_certs(path).map_err(|e| file_error(what, &e))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    pem::read_key(path).map_err(|e| file_error("client key", &e))
}

/// Builds the client configuration. Without `ca_file`, the system's roots
/// (`/etc/ssl/certs/ca-certificates.crt`) are trusted.
pub fn client_config(tls: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    install_provider();
    let mut roots = RootCertStore::empty();
    let ca_path = tls
        .ca_file
        .clone()
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    for cert in read_certs("CA file", &ca_path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("CA certificate refused: {e}")))?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs("client certificate", cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
