//! TLS for the database connection (rustls with the ring provider), chosen by
//! `database.sslmode`:
//!
//! - `disable`: no TLS. The configuration allows it for loopback hosts and Unix sockets only.
//! - `require`: encrypted. The server's certificate chain is checked against `ca_file` when
//!   one is given (libpq's `verify-ca`), its host name is not; without `ca_file` nothing is
//!   checked, which the configuration allows for loopback hosts only.
//! - `verify-full`: the chain is checked against `ca_file` and the certificate must name the
//!   host of the URL (DNS name or IP address). The default off loopback.
//!
//! A client certificate (`client_cert`, `client_key`) is presented when configured, for
//! `hostssl ... cert` lines in `pg_hba.conf`. SCRAM channel binding (`tls-server-end-point`)
//! comes with `tokio-postgres-rustls`, so a password login over TLS is bound to the
//! server's certificate when the server offers `SCRAM-SHA-256-PLUS`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{provider, read_certs, read_key, roots};

/// `database.sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    Disable,
    Require,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "`disable`, `require` or `verify-full`";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "disable" => Some(Self::Disable),
            "require" => Some(Self::Require),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS settings of the database connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: SslMode,
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl DbTls {
    /// No TLS (a loopback or Unix-socket database).
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// `verify-full` against `ca_file`.
    pub fn verify_full(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            mode: SslMode::VerifyFull,
            ca_file: Some(ca_file.into()),
            client_cert: None,
            client_key: None,
        }
    }
}

/// The connector for `tls`, or None for `disable`. Reads the PEM files; an error names the
/// file and the key.
pub(super) fn connector(tls: &DbTls) -> Result<Option<MakeRustlsConnect>, String> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let roots = match &tls.ca_file {
        Some(ca) => Some(Arc::new(
            roots(ca).map_err(|e| format!("database.ca_file: {e}"))?,
        )),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("database.ca_file: {e}"))?
        }
        (SslMode::VerifyFull, None) => {
            return Err("database.sslmode: verify-full needs database.ca_file".into())
        }
        (_, Some(roots)) => Arc::new(ChainOnly {
            inner: WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("database.ca_file: {e}"))?,
        }),
        (_, None) => Arc::new(Unverified {
            provider: Arc::clone(&provider),
        }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(
                read_certs(c).map_err(|e| format!("database.client_cert: {e}"))?,
                read_key(k).map_err(|e| format!("database.client_key: {e}"))?,
            )
            .map_err(|e| format!("database.client_cert: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("database.client_cert and database.client_key go together".into()),
    };
    // PostgreSQL 17 checks ALPN when a client sends it, and needs it for direct TLS.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// `require` with `ca_file`: the chain is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity) before the name: a name error means the
        // chain was good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` without `ca_file` (loopback only): encryption, no authentication of the
/// server. The handshake signatures are still checked, against the presented certificate.
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether every host of `config` is on this machine: a Unix socket, `localhost` or a
/// loopback address (and so is every `hostaddr`). False when it names no host.
pub fn all_local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                let bare = name.trim_start_matches('[').trim_end_matches(']');
                bare.eq_ignore_ascii_case("localhost")
                    || bare
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
        && config
            .get_hostaddrs()
            .iter()
            .all(std::net::IpAddr::is_loopback)
}

/// `host:port` of every host, for messages.
pub fn describe_hosts(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn loopback_and_unix_sockets_are_local_and_anything_else_is_not() {
        assert!(all_local(&config("postgresql://u@127.0.0.1/db")));
        assert!(all_local(&config("postgresql://u@localhost:5433/db")));
        assert!(all_local(&config("postgresql://u@[::1]/db")));
        assert!(all_local(&config("host=/var/run/postgresql dbname=db")));
        assert!(!all_local(&config("postgresql://u@db.plant.local/db")));
        assert!(!all_local(&config("postgresql://u@10.0.0.5/db")));
        assert!(!all_local(&config(
            "host=localhost hostaddr=10.0.0.5 dbname=db"
        )));
        assert!(!all_local(&config(
            "postgresql://u@127.0.0.1,db.plant.local/db"
        )));
    }

    #[test]
    fn hosts_are_described_with_their_ports() {
        assert_eq!(
            describe_hosts(&config("postgresql://u@db.plant.local:6432/db")),
            "db.plant.local:6432"
        );
        assert_eq!(
            describe_hosts(&config("host=/run/postgresql dbname=db")),
            "/run/postgresql/.s.PGSQL.5432"
        );
    }

    #[test]
    fn verify_full_without_a_ca_and_half_a_client_identity_are_refused() {
        let mut tls = DbTls::disabled();
        assert!(connector(&tls).unwrap().is_none());
        tls.mode = SslMode::VerifyFull;
        assert!(connector(&tls).err().unwrap().contains("ca_file"));
        tls.mode = SslMode::Require;
        tls.client_cert = Some("/nonexistent.pem".into());
        assert!(connector(&tls).err().unwrap().contains("go together"));
    }
}
