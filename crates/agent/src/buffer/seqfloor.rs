//! Sequence numbers must never be reused, even when the store file is lost (moved aside as
//! corrupt, deleted by hand). The store keeps `next_seq` itself; this sidecar file records an
//! upper bound of every seq ever handed out. Before a commit uses a seq at or past the bound,
//! the bound is raised by a block and made durable (write, fsync, rename, fsync dir), so a
//! fresh store continues above everything the old one may have used. One fsync per block of
//! a million events costs nothing measurable.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub(super) const FILE_NAME: &str = "seq.floor";
const BLOCK: u64 = 1 << 20;

#[derive(Debug)]
pub(super) struct SeqFloor {
    path: PathBuf,
    /// Every seq ever used is below this.
    reserved: u64,
}

/// What was found on disk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    Missing,
    Unreadable(String),
    Value(u64),
}

impl SeqFloor {
    pub(super) fn read(dir: &Path) -> (Self, Found) {
        let path = dir.join(FILE_NAME);
        let found = match fs::read_to_string(&path) {
            Ok(text) => match text.trim().strip_prefix("reserved=").map(str::parse::<u64>) {
                Some(Ok(v)) => Found::Value(v),
                _ => Found::Unreadable(format!("unexpected content {:?}", text.trim())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Missing,
            Err(e) => Found::Unreadable(e.to_string()),
        };
        let reserved = match found {
            Found::Value(v) => v,
            _ => 0,
        };
        (Self { path, reserved }, found)
    }

    pub(super) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Makes sure every seq below `next_seq_after_commit` is covered, durably.
    pub(super) fn cover(&mut self, next_seq_after_commit: u64) -> io::Result<()> {
        if next_seq_after_commit <= self.reserved {
            return Ok(());
        }
        let target = next_seq_after_commit.saturating_add(BLOCK);
        let tmp = self.path.with_extension("floor.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "reserved={target}")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.reserved = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_floor_is_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut floor, found) = SeqFloor::read(dir.path());
        assert_eq!(found, Found::Missing);
        floor.cover(10).unwrap();
        let reserved = floor.reserved();
        assert!(reserved >= 10);
        floor.cover(reserved).unwrap();
        assert_eq!(
            floor.reserved(),
            reserved,
            "no write while inside the block"
        );
        let (again, found) = SeqFloor::read(dir.path());
        assert_eq!(found, Found::Value(reserved));
        assert_eq!(again.reserved(), reserved);
    }

    #[test]
    fn garbage_in_the_floor_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "lol").unwrap();
        let (floor, found) = SeqFloor::read(dir.path());
        assert!(matches!(found, Found::Unreadable(_)));
        assert_eq!(floor.reserved(), 0);
    }
}
