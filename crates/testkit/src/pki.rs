//! The test PKI: a CA of its own, a server certificate for 127.0.0.1 / localhost and a
//! client certificate, as PEM files in a temporary directory, and more certificates on
//! demand ([`Pki::issue`]). One for every test that needs TLS: the Mosquitto broker's
//! listeners, the collector's HTTPS and PostgreSQL, the agent's HTTPS sink and health server.

use std::path::PathBuf;

/// A CA and its files, in a temporary directory removed on drop:
/// `ca.pem`, `server.pem` / `server.key` (127.0.0.1 and localhost, server authentication),
/// `client.pem` / `client.key` (`gw-test`, client authentication).
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA certificate, PEM (also `ca.pem`).
    pub ca_pem: String,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    /// A PKI whose CA is called "linesentry test CA".
    // Not `Default`: a new PKI generates keys and writes files.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self::named("linesentry")
    }

    /// A PKI whose CA is called "`name` test CA", to tell several apart in a test.
    pub fn named(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("create the test PKI directory");
        let ca_key = rcgen::KeyPair::generate().expect("generate the test CA key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("test CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA")
            .pem();
        let pki = Self {
            dir,
            ca_pem,
            ca_params,
            ca_key,
        };
        let (server, server_key) = pki.issue(&["127.0.0.1", "localhost"], false);
        let (client, client_key) = pki.issue(&["gw-test"], true);
        for (file, pem) in [
            ("ca.pem", pki.ca_pem.clone()),
            ("server.pem", server),
            ("server.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
        ] {
            std::fs::write(pki.path(file), pem).expect("write a test PKI file");
        }
        pki
    }

    /// A file in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// `client.pem`: the certificate of `gw-test`.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// `client.key`.
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// (certificate PEM, key PEM) for `names` (the first is also the common name), signed
    /// by the CA, for client or for server authentication.
    pub fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("generate a test key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .expect("test certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign a test certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// The server certificate and key, PEM.
    pub fn server_pem(&self) -> (String, String) {
        let read = |f: &str| std::fs::read_to_string(self.path(f)).expect("read the test PKI");
        (read("server.pem"), read("server.key"))
    }
}
