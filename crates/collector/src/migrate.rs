//! Versioned schema migrations, embedded in the binary.
//!
//! `schema_migrations` records each applied version with a SHA-256 of its text. At start (or
//! `linesentry-collector migrate`) the runner takes a session advisory lock so two collectors
//! starting together do not race, refuses a database whose applied migrations differ from
//! this build's (edited after release, or a newer collector's), and applies the missing ones
//! in order, each in its own transaction.

use sha2::{Digest, Sha256};

use super::db::{DbError, Pool};
use linesentry_event::integrity::hex;

/// One migration: version, name, SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "alerts",
        sql: include_str!("../migrations/0002_alerts.sql"),
    },
    Migration {
        version: 3,
        name: "collector_events",
        sql: include_str!("../migrations/0003_collector_events.sql"),
    },
    Migration {
        version: 4,
        name: "siem",
        sql: include_str!("../migrations/0004_siem.sql"),
    },
    Migration {
        version: 5,
        name: "console",
        sql: include_str!("../migrations/0005_console.sql"),
    },
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration {version} ({name}) failed: {source}")]
    Apply {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migration {version} was applied with other content (checksum {found}, this build has {expected}); refusing to run against a schema this build did not make")]
    Checksum {
        version: i32,
        found: String,
        expected: String,
    },
    #[error("the database has migration {0}, which this build does not know: a newer collector migrated it")]
    Newer(i32),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

fn checksum(sql: &str) -> String {
    hex(&Sha256::digest(sql.as_bytes()))
}

/// Applies the missing migrations; returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, MigrateError> {
    let mut conn = pool.get().await?;
    let client = &mut conn.client;
    // The server's NOTICE ("relation schema_migrations already exists, skipping") is not
    // for the user; admin commands run this on every call.
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             RESET client_min_messages;",
        )
        .await?;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('linesentry.migrate', 0))",
            &[],
        )
        .await?;
    let result = apply_missing(client).await;
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('linesentry.migrate', 0))",
            &[],
        )
        .await;
    result
}

async fn apply_missing(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, MigrateError> {
    let rows = client
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut applied = std::collections::BTreeMap::new();
    for row in rows {
        applied.insert(row.get::<_, i32>(0), row.get::<_, String>(1));
    }
    for (version, found) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => return Err(MigrateError::Newer(*version)),
            Some(m) => {
                let expected = checksum(m.sql);
                if *found != expected {
                    return Err(MigrateError::Checksum {
                        version: *version,
                        found: found.clone(),
                        expected,
                    });
                }
            }
        }
    }
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if applied.contains_key(&m.version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Apply {
                version: m.version,
                name: m.name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        done.push(m.version);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_increasing_order() {
        // Numbers are handed out per branch (4: SIEM outbox, 5: console), so one may land
        // before the other: increasing and unique, not necessarily contiguous. The runner
        // applies whatever the database lacks, in this order.
        assert_eq!(MIGRATIONS[0].version, 1);
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for m in MIGRATIONS {
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
    }
}
