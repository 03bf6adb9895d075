//! Offline access to a stopped agent's store, for `linesentry buffer stats|list|export`.
//!
//! Opening repairs a store left by an unclean shutdown (as the agent itself would) but never
//! moves a file aside or creates one: inspecting must not change what is there to inspect.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable};

use super::store::{self, Lane, Meta, ALERTS, META, TELEMETRY};
use super::STORE_FILE;
use linesentry_event::SecurityEvent;

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
        let telemetry = txn.open_table(TELEMETRY).map_err(|e| self.err(e))?;
        let alerts = txn.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut oldest = None;
        store::read_range(&telemetry, &alerts, Lane::All, 0, 1, |k, v| {
            oldest = Some((k, store::decode(k, v).ok()));
        })
        .map_err(|e| self.err(e))?;
        let newest = [
            telemetry
                .last()
                .map_err(|e| self.err(e))?
                .map(|(k, _)| k.value()),
            alerts
                .last()
                .map_err(|e| self.err(e))?
                .map(|(k, _)| k.value()),
        ]
        .into_iter()
        .flatten()
        .max();
        Ok(OfflineStats {
            path: self.path.display().to_string(),
            depth: meta.count,
            bytes: meta.bytes,
            next_seq: meta.next_seq,
            oldest_seq: oldest.as_ref().map(|(k, _)| *k),
            newest_seq: newest,
            oldest_timestamp: oldest.and_then(|(_, e)| e).map(|e| e.timestamp.to_string()),
            dropped_total: meta.dropped_total.iter().sum(),
            dropped_unreported: meta.pending_drops(),
            file_bytes: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        })
    }

    /// The dead letters, oldest seq first, at most `max`.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<super::DeadLetter>, InspectError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        super::read_dead(&txn, max).map_err(|e| match e {
            super::DeadReadError::Storage(e) => self.err(e),
            super::DeadReadError::Record(e) => InspectError::Unreadable {
                path: self.path.clone(),
                message: e.to_string(),
            },
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
        let telemetry = txn.open_table(TELEMETRY).map_err(|e| self.err(e))?;
        let alerts = txn.open_table(ALERTS).map_err(|e| self.err(e))?;
        let start = after.map_or(0, |s| s.saturating_add(1));
        store::read_range(
            &telemetry,
            &alerts,
            Lane::All,
            start,
            limit.unwrap_or(u64::MAX),
            |k, v| {
                f(store::decode(k, v));
            },
        )
        .map_err(|e| self.err(e))
    }
}
