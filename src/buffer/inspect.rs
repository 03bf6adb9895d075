//! Offline access to a stopped agent's store, for `linesentry buffer stats|list|export`.
//!
//! Opening repairs a store left by an unclean shutdown (as the agent itself would) but never
//! moves a file aside or creates one: inspecting must not change what is there to inspect.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable};

use super::store::{self, Meta, EVENTS, META};
use super::STORE_FILE;
use crate::event::SecurityEvent;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    #[error("no store at {0} (wrong --data directory?)")]
    Missing(PathBuf),
    #[error("store {0} is in use: stop the agent before inspecting its buffer offline")]
    Locked(PathBuf),
    #[error("store {path} cannot be read: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// Read access to a store file.
#[derive(Debug)]
pub struct Inspector {
    db: Database,
    path: PathBuf,
}

/// What `buffer stats` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfflineStats {
    pub path: String,
    pub depth: u64,
    pub bytes: u64,
    pub next_seq: u64,
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    pub oldest_timestamp: Option<String>,
    pub dropped_total: u64,
    pub dropped_unreported: u64,
    pub file_bytes: u64,
}

impl Inspector {
    pub fn open(dir: &Path) -> Result<Self, InspectError> {
        let path = dir.join(STORE_FILE);
        if !path.exists() {
            return Err(InspectError::Missing(path));
        }
        let unreadable = |message: String| InspectError::Unreadable {
            path: path.clone(),
            message,
        };
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_check_integrity_on_open(true)
                .open(&path)
        }))
        .map_err(|_| unreadable("redb failed on the file".into()))?;
        let db = match opened {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(InspectError::Locked(path)),
            Err(e) => return Err(unreadable(e.to_string())),
        };
        Ok(Self { db, path })
    }

    fn err(&self, e: impl Into<redb::Error>) -> InspectError {
        InspectError::Unreadable {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    pub fn stats(&self) -> Result<OfflineStats, InspectError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta_table = txn.open_table(META).map_err(|e| self.err(e))?;
        let meta = Meta::load(&meta_table).map_err(|e| self.err(e))?;
        let events = txn.open_table(EVENTS).map_err(|e| self.err(e))?;
        let first = events.first().map_err(|e| self.err(e))?;
        let last = events.last().map_err(|e| self.err(e))?;
        let oldest = match &first {
            Some((k, v)) => store::decode(k.value(), v.value()).ok(),
            None => None,
        };
        Ok(OfflineStats {
            path: self.path.display().to_string(),
            depth: meta.count,
            bytes: meta.bytes,
            next_seq: meta.next_seq,
            oldest_seq: first.as_ref().map(|(k, _)| k.value()),
            newest_seq: last.as_ref().map(|(k, _)| k.value()),
            oldest_timestamp: oldest.map(|e| e.timestamp.to_string()),
            dropped_total: meta.dropped_total.iter().sum(),
            dropped_unreported: meta.pending_drops(),
            file_bytes: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        })
    }

    /// Calls `f` for every buffered event in seq order, from `after` (exclusive), at most
    /// `limit`. A record that does not decode is passed as an error and the walk goes on.
    pub fn for_each(
        &self,
        after: Option<u64>,
        limit: Option<u64>,
        mut f: impl FnMut(Result<SecurityEvent, store::RecordError>),
    ) -> Result<u64, InspectError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let events = txn.open_table(EVENTS).map_err(|e| self.err(e))?;
        let start = after.map_or(0, |s| s.saturating_add(1));
        let mut n = 0;
        for item in events.range(start..).map_err(|e| self.err(e))? {
            if limit.is_some_and(|l| n >= l) {
                break;
            }
            let (k, v) = item.map_err(|e| self.err(e))?;
            f(store::decode(k.value(), v.value()));
            n += 1;
        }
        Ok(n)
    }
}
