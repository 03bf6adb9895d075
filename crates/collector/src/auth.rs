//! API tokens and roles.
//!
//! A token is `lsc_` followed by 43 base64url characters (32 random bytes); only its SHA-256
//! is stored, so a database dump does not hand out access. Roles: `viewer` queries and
//! streams; `operator` also acknowledges alerts; `admin` also manages gateways and tokens;
//! `gateway` may only ingest, and only for its own gateway.
//!
//! Lookups are cached for [`CACHE_TTL`] (a revocation takes effect within it), refused tokens
//! too, in a bounded map, so guessing tokens costs the database nothing.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::db::{DbError, Pool};
use super::registry::AdminError;

pub const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;
pub const TOKEN_PREFIX: &str = "lsc_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Gateway,
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Does this role include `needed`? Viewer < operator < admin; gateway stands alone.
    pub fn allows(self, needed: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Gateway => None,
            Role::Viewer => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
        };
        match (rank(self), rank(needed)) {
            (Some(have), Some(need)) => have >= need,
            (None, None) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "gateway" => Role::Gateway,
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => {
                return Err(format!(
                    "unknown role `{s}`; expected viewer, operator, admin or gateway"
                ))
            }
        })
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id, or None for a gateway identified by its client certificate.
    pub token_id: Option<Uuid>,
    /// Token name, or `gateway:<id>` for a client certificate.
    pub name: String,
    pub role: Role,
    /// The gateway a `gateway` principal speaks for.
    pub gateway_id: Option<String>,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token.
pub fn new_token() -> Result<String, AdminError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| AdminError::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// Creates a token; returns its id and the token, which is shown once and never stored.
pub async fn create_token(
    pool: &Pool,
    name: &str,
    role: Role,
    gateway_id: Option<&str>,
) -> Result<(Uuid, String), AdminError> {
    if name.is_empty() || name.len() > 128 || name.contains('\0') {
        return Err(AdminError::Invalid(
            "token name: expected 1 to 128 characters".into(),
        ));
    }
    if (role == Role::Gateway) != gateway_id.is_some() {
        return Err(AdminError::Invalid(
            "a gateway token names its gateway (--gateway ID); other roles do not".into(),
        ));
    }
    let token = new_token()?;
    let id = Uuid::now_v7();
    let conn = pool.get().await?;
    if let Some(gw) = gateway_id {
        let known = conn
            .client
            .query_opt("SELECT 1 FROM gateways WHERE gateway_id = $1", &[&gw])
            .await?;
        if known.is_none() {
            return Err(AdminError::NotFound(format!(
                "no gateway `{gw}`; register it first (gateway add)"
            )));
        }
    }
    conn.client
        .execute(
            "INSERT INTO api_tokens (id, name, role, gateway_id, token_sha256) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &name, &role.as_str(), &gateway_id, &sha256(&token).as_slice()],
        )
        .await?;
    Ok((id, token))
}

pub async fn revoke_token(pool: &Pool, id: Uuid) -> Result<(), AdminError> {
    let conn = pool.get().await?;
    let n = conn
        .client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!("no active token {id}")));
    }
    Ok(())
}

pub async fn list_tokens(pool: &Pool) -> Result<Vec<Value>, AdminError> {
    let conn = pool.get().await?;
    let rows = conn
        .client
        .query(
            "SELECT id, name, role, gateway_id, created_at, revoked_at FROM api_tokens ORDER BY created_at",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>(0).to_string(),
                "name": r.get::<_, String>(1),
                "role": r.get::<_, String>(2),
                "gateway_id": r.get::<_, Option<String>>(3),
                "created_at": r.get::<_, chrono::DateTime<chrono::Utc>>(4).to_rfc3339(),
                "revoked_at": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(5).map(|t| t.to_rfc3339()),
            })
        })
        .collect())
}

/// Token digest -> (looked up at, principal or refused).
type TokenCache = HashMap<[u8; 32], (Instant, Option<Principal>)>;

/// Token lookups with a short cache.
#[derive(Debug, Clone)]
pub struct Tokens {
    pool: Pool,
    cache: Arc<Mutex<TokenCache>>,
}

impl Tokens {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The principal of a presented token, or None if it is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, DbError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 100 {
            return Ok(None);
        }
        let digest = sha256(token);
        {
            let cache = self.cache.lock().await;
            if let Some((at, p)) = cache.get(&digest) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(p.clone());
                }
            }
        }
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_opt(
                "SELECT id, name, role, gateway_id FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
                &[&digest.as_slice()],
            )
            .await?;
        let principal = row.and_then(|r| {
            Some(Principal {
                token_id: Some(r.get(0)),
                name: r.get(1),
                role: r.get::<_, &str>(2).parse().ok()?,
                gateway_id: r.get(3),
            })
        });
        let mut cache = self.cache.lock().await;
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (Instant::now(), principal.clone()));
        Ok(principal)
    }

    /// Forgets cached lookups (after a revocation through this process).
    pub async fn invalidate(&self) {
        self.cache.lock().await.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_gateway_stands_alone() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer) && !Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Gateway.allows(Role::Viewer) && !Role::Admin.allows(Role::Gateway));
        assert!(Role::Gateway.allows(Role::Gateway));
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert!(a[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
