//! Registered gateways: their Ed25519 keys and client certificates, cached for the ingest
//! path, and the admin operations behind `linesentry-collector gateway ...` and the admin
//! API.
//!
//! The cache is reloaded whole (a plant has hundreds of gateways, not millions) every
//! [`RELOAD_EVERY`], so a revoked key or disabled gateway is refused within that time. A
//! gateway or key the cache does not know is looked up at once (a just-registered gateway
//! works immediately); a confirmed miss is remembered for [`MISS_RELOAD_MIN`], in a bounded
//! map, so a flood of forged gateway ids costs at most one query per id per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use linesentry_common::pem::PemProblem;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use super::db::{DbError, Pool};
use linesentry_event::integrity::{hex, key_id};

pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
pub const MISS_RELOAD_MIN: Duration = Duration::from_secs(1);

/// The key a batch must verify with, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    Key(VerifyingKey),
    UnknownGateway,
    Disabled,
    UnknownKey,
    RevokedKey,
}

#[derive(Debug, Clone)]
struct GatewayEntry {
    enabled: bool,
    /// key_id -> (key, revoked)
    keys: HashMap<String, (VerifyingKey, bool)>,
}

#[derive(Debug, Default)]
struct Cache {
    gateways: HashMap<String, GatewayEntry>,
    by_cert: HashMap<[u8; 32], String>,
    loaded_at: Option<Instant>,
    /// (gateway, key id) confirmed unknown at this time.
    misses: HashMap<(String, String), Instant>,
}

const MISSES_MAX: usize = 10_000;

/// The gateway registry as the ingest path sees it.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: Pool,
    cache: Arc<RwLock<Cache>>,
}

impl Registry {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            cache: Arc::new(RwLock::new(Cache::default())),
        }
    }

    async fn reload(&self, cache: &mut Cache) -> Result<(), DbError> {
        let conn = self.pool.get().await?;
        let gateways = conn
            .client
            .query(
                "SELECT gateway_id, enabled, client_cert_sha256 FROM gateways",
                &[],
            )
            .await?;
        let keys = conn
            .client
            .query(
                "SELECT gateway_id, key_id, public_key, revoked_at IS NOT NULL FROM gateway_keys",
                &[],
            )
            .await?;
        let mut fresh = Cache {
            loaded_at: Some(Instant::now()),
            misses: std::mem::take(&mut cache.misses),
            ..Cache::default()
        };
        for r in gateways {
            let id: String = r.get(0);
            if let Some(cert) = r.get::<_, Option<&[u8]>>(2) {
                if let Ok(c) = <[u8; 32]>::try_from(cert) {
                    fresh.by_cert.insert(c, id.clone());
                }
            }
            fresh.gateways.insert(
                id,
                GatewayEntry {
                    enabled: r.get(1),
                    keys: HashMap::new(),
                },
            );
        }
        for r in keys {
            let gw: String = r.get(0);
            let raw: &[u8] = r.get(2);
            let Ok(bytes) = <[u8; 32]>::try_from(raw) else {
                continue;
            };
            let Ok(key) = VerifyingKey::from_bytes(&bytes) else {
                continue;
            };
            if let Some(entry) = fresh.gateways.get_mut(&gw) {
                entry.keys.insert(r.get(1), (key, r.get(3)));
            }
        }
        *cache = fresh;
        Ok(())
    }

    /// The key `key_id` of `gateway_id`.
    pub async fn lookup(&self, gateway_id: &str, key_id: &str) -> Result<KeyLookup, DbError> {
        let miss_key = (gateway_id.to_owned(), key_id.to_owned());
        {
            let cache = self.cache.read().await;
            let fresh = cache.loaded_at.is_some_and(|t| t.elapsed() < RELOAD_EVERY);
            let found = Self::find(&cache, gateway_id, key_id);
            let recent_miss = cache
                .misses
                .get(&miss_key)
                .is_some_and(|t| t.elapsed() < MISS_RELOAD_MIN);
            if fresh && (matches!(found, KeyLookup::Key(_)) || recent_miss) {
                return Ok(found);
            }
        }
        let mut cache = self.cache.write().await;
        if cache.loaded_at.is_none_or(|t| t.elapsed() >= RELOAD_EVERY) {
            self.reload(&mut cache).await?;
        } else if !matches!(Self::find(&cache, gateway_id, key_id), KeyLookup::Key(_)) {
            self.reload_one(&mut cache, gateway_id).await?;
        }
        let found = Self::find(&cache, gateway_id, key_id);
        if matches!(found, KeyLookup::Key(_)) {
            cache.misses.remove(&miss_key);
        } else {
            if cache.misses.len() >= MISSES_MAX {
                cache.misses.clear();
            }
            cache.misses.insert(miss_key, Instant::now());
        }
        Ok(found)
    }

    /// Refreshes one gateway's entry (registered, enabled, keys) from the database.
    async fn reload_one(&self, cache: &mut Cache, gateway_id: &str) -> Result<(), DbError> {
        let conn = self.pool.get().await?;
        let gw = conn
            .client
            .query_opt(
                "SELECT enabled FROM gateways WHERE gateway_id = $1",
                &[&gateway_id],
            )
            .await?;
        let Some(gw) = gw else {
            cache.gateways.remove(gateway_id);
            return Ok(());
        };
        let mut entry = GatewayEntry {
            enabled: gw.get(0),
            keys: HashMap::new(),
        };
        for r in conn
            .client
            .query(
                "SELECT key_id, public_key, revoked_at IS NOT NULL FROM gateway_keys WHERE gateway_id = $1",
                &[&gateway_id],
            )
            .await?
        {
            let Ok(bytes) = <[u8; 32]>::try_from(r.get::<_, &[u8]>(1)) else {
                continue;
            };
            if let Ok(key) = VerifyingKey::from_bytes(&bytes) {
                entry.keys.insert(r.get(0), (key, r.get(2)));
            }
        }
        cache.gateways.insert(gateway_id.to_owned(), entry);
        Ok(())
    }

    fn find(cache: &Cache, gateway_id: &str, key_id: &str) -> KeyLookup {
        match cache.gateways.get(gateway_id) {
            None => KeyLookup::UnknownGateway,
            Some(g) if !g.enabled => KeyLookup::Disabled,
            Some(g) => match g.keys.get(key_id) {
                None => KeyLookup::UnknownKey,
                Some((_, true)) => KeyLookup::RevokedKey,
                Some((k, false)) => KeyLookup::Key(*k),
            },
        }
    }

    /// The enabled gateway whose registered client certificate has this SHA-256.
    pub async fn gateway_for_cert(&self, sha256: &[u8; 32]) -> Result<Option<String>, DbError> {
        {
            let cache = self.cache.read().await;
            if cache.loaded_at.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
                return Ok(cache
                    .by_cert
                    .get(sha256)
                    .cloned()
                    .filter(|gw| cache.gateways.get(gw).is_some_and(|g| g.enabled)));
            }
        }
        let mut cache = self.cache.write().await;
        self.reload(&mut cache).await?;
        Ok(cache
            .by_cert
            .get(sha256)
            .cloned()
            .filter(|gw| cache.gateways.get(gw).is_some_and(|g| g.enabled)))
    }

    /// Forgets the cache (after an admin change through this process).
    pub async fn invalidate(&self) {
        let mut cache = self.cache.write().await;
        cache.loaded_at = None;
        cache.misses.clear();
    }
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Parses a base64 Ed25519 public key (32 bytes, standard or URL-safe alphabet).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, AdminError> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError::Invalid(
            "public key: 64 hex digits look like a hex key; give the key in base64, as `linesentry identity` prints it (44 characters ending in `=`)".into(),
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| {
            AdminError::Invalid(
                "public key is not base64; give it as `linesentry identity` prints it".into(),
            )
        })?;
    let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
        AdminError::Invalid(format!(
            "public key is {} bytes after base64 decoding; an Ed25519 public key is 32 (base64, as `linesentry identity` prints it)",
            v.len()
        ))
    })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| AdminError::Invalid("not a valid Ed25519 public key".into()))
}

/// SHA-256 of the first certificate in a PEM file (a gateway's client certificate).
pub fn cert_fingerprint(pem: &[u8]) -> Result<[u8; 32], AdminError> {
    let certs = linesentry_common::pem::parse_certs(pem).map_err(|e| match e {
        PemProblem::NoCertificate => AdminError::Invalid("no certificate in the PEM file".into()),
        e => AdminError::Invalid(format!("bad PEM: {e}")),
    })?;
    let cert = &certs[0];
    Ok(Sha256::digest(cert.as_ref()).into())
}

pub fn check_gateway_id(id: &str) -> Result<(), AdminError> {
    let ok = !id.is_empty()
        && id.len() <= linesentry_event::MAX_NAME_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "gateway id `{id}`: expected 1 to 128 letters, digits, `.`, `_`, `-` or `:`"
        )))
    }
}

/// Registers `gateway_id` (or re-enables it) and adds `public_key`; returns the key id.
pub async fn add_gateway(
    pool: &Pool,
    gateway_id: &str,
    public_key: &VerifyingKey,
    description: Option<&str>,
    client_cert_sha256: Option<[u8; 32]>,
) -> Result<String, AdminError> {
    check_gateway_id(gateway_id)?;
    let kid = key_id(public_key);
    let mut conn = pool.get().await?;
    let tx = conn.client.transaction().await?;
    let cert: Option<Vec<u8>> = client_cert_sha256.map(|c| c.to_vec());
    tx.execute(
        "INSERT INTO gateways (gateway_id, description, client_cert_sha256) VALUES ($1, coalesce($2, ''), $3)
         ON CONFLICT (gateway_id) DO UPDATE SET enabled = true,
             description = coalesce($2, gateways.description),
             client_cert_sha256 = coalesce($3, gateways.client_cert_sha256)",
        &[&gateway_id, &description, &cert],
    )
    .await?;
    tx.execute(
        "INSERT INTO gateway_keys (gateway_id, key_id, public_key) VALUES ($1, $2, $3)
         ON CONFLICT (gateway_id, key_id) DO UPDATE SET revoked_at = NULL",
        &[&gateway_id, &kid, &public_key.as_bytes().as_slice()],
    )
    .await?;
    tx.commit().await?;
    Ok(kid)
}

/// Revokes one key of a gateway: batches signed with it are refused from now on.
pub async fn revoke_key(pool: &Pool, gateway_id: &str, key_id: &str) -> Result<(), AdminError> {
    let conn = pool.get().await?;
    let n = conn
        .client
        .execute(
            "UPDATE gateway_keys SET revoked_at = now() WHERE gateway_id = $1 AND key_id = $2 AND revoked_at IS NULL",
            &[&gateway_id, &key_id],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!(
            "gateway `{gateway_id}` has no active key `{key_id}`"
        )));
    }
    Ok(())
}

/// Enables or disables a gateway (a disabled gateway's batches are refused; its events
/// stay).
pub async fn set_enabled(pool: &Pool, gateway_id: &str, enabled: bool) -> Result<(), AdminError> {
    let conn = pool.get().await?;
    let n = conn
        .client
        .execute(
            "UPDATE gateways SET enabled = $2 WHERE gateway_id = $1",
            &[&gateway_id, &enabled],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!("no gateway `{gateway_id}`")));
    }
    Ok(())
}

/// Every gateway with its status and chain counters, as JSON.
pub async fn list_gateways(pool: &Pool) -> Result<Vec<Value>, AdminError> {
    let conn = pool.get().await?;
    let rows = conn
        .client
        .query(
            "SELECT g.gateway_id, g.description, g.enabled, g.created_at, g.last_seen, g.last_seq,
                    g.events_total, g.gaps, g.gaps_unexplained, g.missing_events, g.broken,
                    g.rejected_batches, g.status, g.status_detail, g.status_at,
                    g.client_cert_sha256,
                    coalesce((SELECT json_agg(json_build_object('key_id', k.key_id,
                                 'revoked', k.revoked_at IS NOT NULL) ORDER BY k.added_at)
                              FROM gateway_keys k WHERE k.gateway_id = g.gateway_id), '[]'::json),
                    (SELECT count(*) FROM chain_links c
                     WHERE c.gateway_id = g.gateway_id AND c.status = 'pending')
             FROM gateways g ORDER BY g.gateway_id",
            &[],
        )
        .await?;
    let ts = |v: Option<chrono::DateTime<chrono::Utc>>| {
        v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "gateway_id": r.get::<_, String>(0),
                "description": r.get::<_, String>(1),
                "enabled": r.get::<_, bool>(2),
                "created_at": ts(Some(r.get(3))),
                "last_seen": ts(r.get(4)),
                "last_seq": r.get::<_, Option<i64>>(5),
                "events_total": r.get::<_, i64>(6),
                "gaps": r.get::<_, i64>(7),
                "gaps_unexplained": r.get::<_, i64>(8),
                "missing_events": r.get::<_, i64>(9),
                "broken": r.get::<_, i64>(10),
                "rejected_batches": r.get::<_, i64>(11),
                "status": r.get::<_, Option<String>>(12),
                "status_detail": r.get::<_, Option<Value>>(13),
                "status_at": ts(r.get(14)),
                "client_cert_sha256": r.get::<_, Option<&[u8]>>(15).map(hex),
                "keys": r.get::<_, Value>(16),
                "pending": r.get::<_, i64>(17),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        match parse_public_key(text) {
            Err(AdminError::Invalid(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_hex_key_is_refused_with_the_hint_that_the_key_is_base64() {
        let hex_key = "ab".repeat(32);
        let m = refusal(&hex_key);
        assert!(
            m.contains("base64") && m.contains("linesentry identity"),
            "{m}"
        );
        assert!(refusal("AAAA").contains("3 bytes after base64 decoding"));
        assert!(refusal("not base64 at all!").contains("not base64"));
    }
}
