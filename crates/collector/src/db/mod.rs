//! PostgreSQL connections: a small bounded pool with per-connection prepared statements.
//!
//! Every connection is set to UTC (month partitions and rollup buckets are UTC) and gets a
//! statement timeout. A connection that broke is dropped when returned; the next checkout
//! opens a fresh one, so a database restart heals without restarting the collector.
//! Connections use TLS as `database.sslmode` says ([`tls`]).

pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use self::tls::{DbTls, SslMode};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("database connection: {0}")]
    Connect(String),
    #[error("database: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("database: {0}")]
    Other(String),
}

impl DbError {
    /// Worth retrying: the connection or server failed, or a transaction lost a race
    /// (serialization failure, deadlock). Anything else is about the data or the SQL, and
    /// retrying the same batch would fail the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect(_) | DbError::Other(_) => true,
            DbError::Query(e) => {
                if e.is_closed() {
                    return true;
                }
                match e.code() {
                    // No server error: the connection failed (I/O) or a value could not be
                    // converted (a bug or bad data, not worth retrying).
                    None => {
                        let mut source = std::error::Error::source(e);
                        while let Some(s) = source {
                            if s.is::<std::io::Error>() {
                                return true;
                            }
                            source = s.source();
                        }
                        false
                    }
                    Some(code) => {
                        let c = code.code();
                        c.starts_with("08")
                            || c.starts_with("53")
                            || c.starts_with("57")
                            || c.starts_with("58")
                            || *code == SqlState::T_R_SERIALIZATION_FAILURE
                            || *code == SqlState::T_R_DEADLOCK_DETECTED
                            || *code == SqlState::LOCK_NOT_AVAILABLE
                            || *code == SqlState::QUERY_CANCELED
                    }
                }
            }
        }
    }
}

/// Connection settings.
#[derive(Clone)]
pub struct DbOptions {
    /// libpq-style URL or key=value string.
    pub url: String,
    pub password: Option<String>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub tls: DbTls,
}

impl std::fmt::Debug for DbOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbOptions")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `url` with any password in it (`user:PASSWORD@` or `password=...`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // The last `@` ends the user info (a password may contain `@`).
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => format!("{path}?{}", redact_pairs(query, '&')),
            None => tail.to_owned(),
        };
        format!("{scheme}://{authority}{tail}")
    } else {
        redact_pairs(url, ' ')
    }
}

fn redact_pairs(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|part| {
            let key = part.split('=').next().unwrap_or("");
            if key.trim().eq_ignore_ascii_case("password") && part.contains('=') {
                let (k, _) = part.split_once('=').unwrap_or((part, ""));
                format!("{k}=***")
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

/// A bounded pool of connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: tokio_postgres::Config,
    /// None: `sslmode = disable`.
    tls: Option<MakeRustlsConnect>,
    mode: SslMode,
    /// `host:port` list for messages.
    hosts: String,
    statement_timeout_ms: u64,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("available", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// One open connection with the statements prepared on it.
pub struct Conn {
    pub client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// `sql` prepared once per connection.
    pub async fn prepared(&mut self, sql: &'static str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// A checked-out connection; returns to the pool on drop unless it broke.
pub struct PooledConn {
    conn: Option<Conn>,
    pool: Arc<PoolInner>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn").finish_non_exhaustive()
    }
}

impl std::ops::Deref for PooledConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(conn);
                }
            }
        }
    }
}

impl Pool {
    pub fn new(options: &DbOptions) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Connect(format!("bad url: {e}")))?;
        if let Some(pw) = &options.password {
            config.password(pw);
        }
        config.connect_timeout(options.connect_timeout);
        config.application_name("linesentry-collector");
        let tls = tls::connector(&options.tls).map_err(DbError::Connect)?;
        // TLS is either required or off: never `prefer`, which falls back to plain text.
        config.ssl_mode(if tls.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        let hosts = tls::describe_hosts(&config);
        Ok(Self {
            inner: Arc::new(PoolInner {
                config,
                tls,
                mode: options.tls.mode,
                hosts,
                statement_timeout_ms: options.statement_timeout.as_millis() as u64,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(options.pool_size.max(1))),
            }),
        })
    }

    /// Waits for a free slot, then reuses an idle connection or opens one.
    pub async fn get(&self) -> Result<PooledConn, DbError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::Other("pool closed".into()))?;
        let reuse = {
            let mut idle = self
                .inner
                .idle
                .lock()
                .map_err(|_| DbError::Other("pool lock poisoned".into()))?;
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.client.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let conn = match reuse {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: Arc::clone(&self.inner),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Conn, DbError> {
        let inner = &self.inner;
        let failed = |e: tokio_postgres::Error| {
            // tokio-postgres leaves the cause (the certificate problem) to `source`.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let more = cause.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = cause.source();
            }
            let hint = if text.contains("invalid peer certificate") {
                match inner.mode {
                    SslMode::VerifyFull => " (check that database.ca_file holds the CA that signed the server's certificate and that the certificate names this host)",
                    _ => " (check that database.ca_file holds the CA that signed the server's certificate)",
                }
            } else {
                ""
            };
            DbError::Connect(format!(
                "{} (sslmode {}): {text}{hint}",
                inner.hosts, inner.mode
            ))
        };
        let client = match &inner.tls {
            None => {
                let (client, connection) = inner.config.connect(NoTls).await.map_err(failed)?;
                spawn_connection(connection);
                client
            }
            Some(tls) => {
                let (client, connection) =
                    inner.config.connect(tls.clone()).await.map_err(failed)?;
                spawn_connection(connection);
                client
            }
        };
        // Both values are numbers or constants, not input.
        client
            .batch_execute(&format!(
                "SET TIME ZONE 'UTC'; SET statement_timeout = {}",
                self.inner.statement_timeout_ms
            ))
            .await?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
}

/// Creates database `name` (letters, digits and `_` only) on the server that `url` (a
/// superuser's URL of an existing database) points to: for the private PostgreSQL of the
/// demo, the benchmark and the tests (`linesentry_common::local::LocalPostgres`).
pub async fn create_database(url: &str, name: &str) -> Result<(), DbError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(DbError::Other(format!(
            "database name `{name}`: letters, digits and `_` only"
        )));
    }
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| DbError::Connect(e.to_string()))?;
    let task = tokio::spawn(conn);
    // An identifier cannot be a bind parameter; `name` was checked above.
    let result = client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await;
    drop(client);
    let _ = task.await;
    result.map_err(DbError::Query)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_urls_are_redacted_and_the_rest_is_kept() {
        assert_eq!(
            redact_url("postgresql://ls:s3cr@t@db.plant.local:5432/ls?sslmode=x"),
            "postgresql://ls:***@db.plant.local:5432/ls?sslmode=x"
        );
        assert_eq!(
            redact_url("postgresql://ls@db/ls?password=hunter2&application_name=a"),
            "postgresql://ls@db/ls?password=***&application_name=a"
        );
        assert_eq!(
            redact_url("host=db user=ls password=hunter2 dbname=ls"),
            "host=db user=ls password=*** dbname=ls"
        );
        assert_eq!(redact_url("postgresql://ls@db/ls"), "postgresql://ls@db/ls");
    }
}
