//! The gateway's Ed25519 identity: created on first start, kept in the data directory.
//!
//! `identity.key` holds the 32-byte secret seed as 64 hex digits and a newline, mode 0600,
//! written to a temporary file and renamed so a crash never leaves half a key. The public
//! key (base64, as `linesentry-collector gateway add --public-key` takes it) is printed by
//! `linesentry identity`. Losing the file means a new key that the collector must be told
//! about; it is never regenerated silently over an existing unreadable file.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

use linesentry_event::integrity::{hex, key_id};

/// File name inside the data directory.
pub const KEY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is not 64 hex digits; move it aside to create a new key (the collector must then be given the new public key)")]
    Malformed { path: PathBuf },
    #[error("no randomness for a new identity key: {0}")]
    Random(String),
}

/// The gateway's signing key, loaded or created.
pub struct Identity {
    pub key: SigningKey,
    pub path: PathBuf,
    /// True when this call created the key.
    pub created: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("path", &self.path)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `dir/identity.key`, creating it when absent.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let seed = linesentry_event::integrity::parse_hash(text.trim())
                    .ok_or_else(|| IdentityError::Malformed { path: path.clone() })?;
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                    path,
                    created: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
                let tmp = dir.join(format!("{KEY_FILE}.tmp"));
                write_private(&tmp, format!("{}\n", hex(&seed)).as_bytes()).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                tracing::info!(path = %path.display(), "created the gateway identity key");
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                    path,
                    created: true,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Base64 of the 32-byte public key.
    pub fn public_key_base64(&self) -> String {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            self.public_key().as_bytes(),
        )
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        assert!(a.created);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert!(!b.created);
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id().len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not 64 hex digits"), "{err}");
    }
}
