//! Reading PEM certificates and private keys, for every TLS listener and client of the
//! agent and the collector. Built on `rustls::pki_types::pem::PemObject` (rustls-pki-types);
//! an error names the file and says what was wrong with it: unreadable, malformed PEM, no
//! certificate, no private key.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What was wrong with PEM data, without saying where it came from.
#[derive(Debug)]
#[non_exhaustive]
pub enum PemProblem {
    /// The file could not be read.
    Unreadable(std::io::Error),
    /// The PEM text itself is broken (bad base64, a section without its end line, ...).
    Malformed(String),
    /// No `CERTIFICATE` section.
    NoCertificate,
    /// No `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section.
    NoPrivateKey,
}

impl fmt::Display for PemProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "cannot read it: {e}"),
            Self::Malformed(e) => write!(f, "malformed PEM: {e}"),
            Self::NoCertificate => f.write_str("holds no PEM certificate"),
            Self::NoPrivateKey => f.write_str("holds no PEM private key"),
        }
    }
}

impl std::error::Error for PemProblem {}

/// A PEM file that could not be used: `{path}: {problem}`.
#[derive(Debug)]
pub struct PemError {
    pub path: PathBuf,
    pub problem: PemProblem,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for PemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

fn malformed(e: pem::Error) -> PemProblem {
    match e {
        pem::Error::Io(e) => PemProblem::Unreadable(e),
        e => PemProblem::Malformed(e.to_string()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError {
        path: path.to_owned(),
        problem: PemProblem::Unreadable(e),
    })
}

fn at<T>(path: &Path, r: Result<T, PemProblem>) -> Result<T, PemError> {
    r.map_err(|problem| PemError {
        path: path.to_owned(),
        problem,
    })
}

/// Every certificate of PEM text, in order; at least one.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed)?;
    if certs.is_empty() {
        return Err(PemProblem::NoCertificate);
    }
    Ok(certs)
}

/// The first private key of PEM text: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemProblem> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(PemProblem::NoPrivateKey),
        Err(e) => Err(malformed(e)),
    }
}

/// Every certificate of a PEM file (a chain, or CA certificates); at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    at(path, parse_certs(&read(path)?))
}

/// The first private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    at(path, parse_key(&read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn cert_and_key(alg: &'static rcgen::SignatureAlgorithm) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key)
    }

    /// A PKCS#8 DER key's PEM as SEC1 or PKCS#1: the same key in the older wrapping, cut
    /// out of the PKCS#8 structure (its `privateKey` OCTET STRING is the inner key).
    fn inner_key_pem(pkcs8_der: &[u8], label: &str) -> String {
        use base64::Engine as _;
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, OCTET STRING privateKey, ... }
        let inner = last_octet_string(pkcs8_der);
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    }

    fn der_len(d: &[u8], at: usize) -> (usize, usize) {
        let first = d[at] as usize;
        if first < 0x80 {
            (first, 1)
        } else {
            let n = first & 0x7f;
            let mut len = 0;
            for b in &d[at + 1..at + 1 + n] {
                len = (len << 8) | *b as usize;
            }
            (len, 1 + n)
        }
    }

    fn last_octet_string(d: &[u8]) -> &[u8] {
        // Outer SEQUENCE, then walk its elements to the first OCTET STRING.
        let (_, n) = der_len(d, 1);
        let mut i = 1 + n;
        loop {
            let tag = d[i];
            let (len, n) = der_len(d, i + 1);
            let body = i + 1 + n;
            if tag == 0x04 {
                return &d[body..body + len];
            }
            i = body + len;
        }
    }

    #[test]
    fn reads_a_chain_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = cert_and_key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (b, _) = cert_and_key(&rcgen::PKCS_ED25519);
        let path = file(&dir, "chain.pem", &format!("{a}{b}"));
        let certs = read_certs(&path).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], parse_certs(a.as_bytes()).unwrap()[0]);
        assert_eq!(certs[1], parse_certs(b.as_bytes()).unwrap()[0]);
    }

    #[test]
    fn reads_pkcs8_sec1_and_pkcs1_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ec) = cert_and_key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let path = file(&dir, "p8.key", &ec.serialize_pem());
        assert!(matches!(read_key(&path).unwrap(), PrivateKeyDer::Pkcs8(_)));

        let sec1 = inner_key_pem(&ec.serialize_der(), "EC PRIVATE KEY");
        let path = file(&dir, "sec1.key", &sec1);
        assert!(matches!(read_key(&path).unwrap(), PrivateKeyDer::Sec1(_)));

        // rcgen on ring makes no RSA keys; the section kind is what decides PKCS#1.
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        let path = file(&dir, "pkcs1.key", pkcs1);
        assert!(matches!(read_key(&path).unwrap(), PrivateKeyDer::Pkcs1(_)));
    }

    #[test]
    fn a_key_and_a_certificate_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_and_key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let path = file(&dir, "both.pem", &format!("{cert}{}", key.serialize_pem()));
        assert_eq!(read_certs(&path).unwrap().len(), 1);
        assert!(read_key(&path).is_ok());
    }

    #[test]
    fn an_empty_file_has_neither() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "empty.pem", "");
        let e = read_certs(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::NoCertificate));
        assert_eq!(
            e.to_string(),
            format!("{}: holds no PEM certificate", path.display())
        );
        let e = read_key(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::NoPrivateKey));
        assert_eq!(
            e.to_string(),
            format!("{}: holds no PEM private key", path.display())
        );
    }

    #[test]
    fn a_key_file_is_not_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = cert_and_key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let path = file(&dir, "only.key", &key.serialize_pem());
        let e = read_certs(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::NoCertificate), "{e}");
    }

    #[test]
    fn a_certificate_file_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = cert_and_key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let path = file(&dir, "only.pem", &cert);
        let e = read_key(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::NoPrivateKey), "{e}");
    }

    #[test]
    fn a_missing_file_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.pem");
        let e = read_certs(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::Unreadable(_)), "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read it: ", path.display())));
        assert!(matches!(
            read_key(&path).unwrap_err().problem,
            PemProblem::Unreadable(_)
        ));
    }

    #[test]
    fn broken_pem_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = read_certs(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::Malformed(_)), "{e}");
        assert!(e.to_string().contains("malformed PEM"), "{e}");
        let path = file(
            &dir,
            "bad.key",
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        );
        let e = read_key(&path).unwrap_err();
        assert!(matches!(e.problem, PemProblem::Malformed(_)), "{e}");
    }
}
