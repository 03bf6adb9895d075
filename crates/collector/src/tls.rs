//! General TLS helpers (rustls with the ring provider): reading PEM certificates and keys,
//! and building server and client configurations from PEM files. The HTTPS listener
//! (`http::tls`), the MQTT client (`mqtt`) and the database connection (`db::tls`) build on
//! it. It takes paths, not settings, so that it depends on nothing else in the crate and
//! any of them can use it.

use std::path::Path;
use std::sync::Arc;

use linesentry_common::pem;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The crypto provider of every TLS configuration the collector builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; an error names the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    pem::read_certs(path).map_err(|e| e.to_string())
}

/// The first private key of a PEM file; an error names the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    pem::read_key(path).map_err(|e| e.to_string())
}

/// The CA certificates of a PEM file as trust roots.
pub fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in read_certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(store)
}

/// A server side: certificate and key, and client certificates checked against
/// `client_ca` when given. A client certificate is verified when presented but not
/// required: what a connection without one may do is the caller's to decide.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| format!("{}: {e}", cert.display()))
}

/// A client side: the server's chain checked against `ca_file`, and a client certificate
/// and key presented when given.
pub fn client_config(
    ca_file: &Path,
    client_auth: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_file)?);
    match client_auth {
        Some((c, k)) => builder
            .with_client_auth_cert(read_certs(c)?, read_key(k)?)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}
