//! The baseline for the queue benchmark: raw redb inserts of fixed-size records with the
//! same durability and group size as the queue, so the two are measured side by side.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

/// Inserts `records` records of `record_bytes` bytes, `per_txn` per durable transaction,
/// into a fresh file in `dir`; returns the elapsed time.
pub fn raw_redb_append(
    dir: &Path,
    records: u64,
    record_bytes: usize,
    per_txn: u64,
) -> Result<Duration, redb::Error> {
    let path = dir.join("raw-baseline.redb");
    let _ = std::fs::remove_file(&path);
    let db = Database::create(&path)?;
    let payload = vec![0x5au8; record_bytes];
    let started = Instant::now();
    let mut key = 0u64;
    while key < records {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(RAW)?;
            for _ in 0..per_txn.min(records - key) {
                table.insert(key, payload.as_slice())?;
                key += 1;
            }
        }
        txn.commit()?;
    }
    let elapsed = started.elapsed();
    drop(db);
    let _ = std::fs::remove_file(&path);
    Ok(elapsed)
}
