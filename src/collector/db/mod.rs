//! PostgreSQL connections: a small bounded pool with per-connection prepared statements.
//!
//! Every connection is set to UTC (month partitions and rollup buckets are UTC) and gets a
//! statement timeout. A connection that broke is dropped when returned; the next checkout
//! opens a fresh one, so a database restart heals without restarting the collector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

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
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// libpq-style URL or key=value string.
    pub url: String,
    pub password: Option<String>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

/// A bounded pool of connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: tokio_postgres::Config,
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
        Ok(Self {
            inner: Arc::new(PoolInner {
                config,
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
        let (client, connection) = self
            .inner
            .config
            .connect(NoTls)
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended");
            }
        });
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
