//! The redb layout and the operations on one write transaction. No threads, no channels:
//! the writer thread calls these, the inspector reads the same tables.
//!
//! Tables:
//! - `events.telemetry` (debug/info) and `events.alerts` (warn and above): seq -> record.
//!   Two tables keyed by the same seq space: eviction pops the head of the telemetry table,
//!   a forwarder can read alerts ahead of a telemetry backlog, and a full read merges both
//!   in seq order. Each event is one insert.
//! - A record is `[RECORD_V2, severity, linked, prev_hash (32 bytes), postcard(event)]`; the
//!   seq lives in the key and the chain link in the header (the ones inside the postcard are
//!   whatever the caller had and are ignored on decode), so callers encode before the writer
//!   numbers and links them. Records written as `[RECORD_V1, severity, postcard]` by earlier
//!   builds still decode (without a link).
//! - `meta`: counters that must survive restarts (next seq, stored bytes, drop counts, the
//!   hash of the last stored event: the chain head).
//! - `dead_letters`: seq -> `[reason length (u16 LE), reason, stored-at micros (i64 LE),
//!   record]`: events a receiver rejected, kept apart so they neither block the queue nor
//!   leave it silently. Bounded by count and bytes; the oldest go first, counted as drops.

use redb::{Range, ReadableTable, Table, TableDefinition, WriteTransaction};

use linesentry_event::integrity::{hex, CanonicalParts, EventHash};
use linesentry_event::{to_postcard_with_members, SecurityEvent, Severity};

pub(super) const TELEMETRY: TableDefinition<u64, &[u8]> = TableDefinition::new("events.telemetry");
pub(super) const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events.alerts");
/// Per-station rule state (baselines), opaque to the buffer: key -> bytes. Written in the
/// same transaction as the events that depend on it, so a crash keeps both or neither.
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("station_state");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// First byte of every record; another value means a record this build cannot read.
pub(super) const RECORD_V1: u8 = 1;
pub(super) const RECORD_V2: u8 = 2;
pub(super) const V2_HEADER: usize = 35;
/// Bytes a record costs beyond its payload in the quota (key, index entry, B-tree share).
pub(super) const RECORD_OVERHEAD: u64 = 32;
/// Layout version written to `meta` on creation.
pub(super) const LAYOUT_VERSION: u64 = 2;

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record of seq {seq} is empty or has unknown format byte")]
    Format { seq: u64 },
    #[error("record of seq {seq} does not decode: {source}")]
    Decode { seq: u64, source: postcard::Error },
}

/// An event encoded by the caller, ready for the writer to number, link and insert.
#[derive(Debug, Clone)]
pub(super) struct Encoded {
    pub(super) severity: Severity,
    pub(super) record: Vec<u8>,
    parts: CanonicalParts,
}

impl Encoded {
    /// The record carries the maps as the canonical JSON the chain's parts write anyway.
    pub(super) fn new(event: &SecurityEvent) -> Result<Self, postcard::Error> {
        let (parts, record) = CanonicalParts::with_members(event, |event_data, context| {
            let mut record = Vec::with_capacity(record_capacity(event, event_data, context));
            record.push(RECORD_V2);
            record.push(severity_byte(event.severity));
            record.resize(V2_HEADER, 0);
            to_postcard_with_members(event, event_data, context, record)
        });
        Ok(Self {
            severity: event.severity,
            record: record?,
            parts,
        })
    }

    /// Links the record to `prev` and returns its own hash as number `seq`.
    fn link(&mut self, seq: u64, prev: Option<&EventHash>) -> EventHash {
        match prev {
            Some(p) => {
                self.record[2] = 1;
                self.record[3..V2_HEADER].copy_from_slice(p);
            }
            None => self.record[2..V2_HEADER].fill(0),
        }
        self.parts.hash(seq, prev)
    }

    pub(super) fn cost(&self) -> u64 {
        self.record.len() as u64 + RECORD_OVERHEAD
    }
}

/// Bytes of a record, or a little more: the header, the strings, and at most 64 for the id,
/// the numbers, the option tags and the length prefixes.
fn record_capacity(event: &SecurityEvent, event_data: &str, context: &str) -> usize {
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    V2_HEADER
        + 64
        + event_data.len()
        + context.len()
        + event.gateway_id.len()
        + event.event_type.len()
        + optional(&event.station_id)
        + optional(&event.user_id)
        + optional(&event.prev_hash)
}

fn severity_byte(s: Severity) -> u8 {
    s as u8
}

fn severity_from_byte(b: u8) -> Option<Severity> {
    Severity::ALL.get(usize::from(b)).copied()
}

/// Decodes a stored record, restoring its seq from the key and its chain link.
pub(super) fn decode(seq: u64, record: &[u8]) -> Result<SecurityEvent, RecordError> {
    if record.len() < 2 || severity_from_byte(record[1]).is_none() {
        return Err(RecordError::Format { seq });
    }
    let (body, prev_hash) = match record[0] {
        RECORD_V1 => (&record[2..], None),
        RECORD_V2 if record.len() >= V2_HEADER => {
            let link = (record[2] == 1).then(|| hex(&record[3..V2_HEADER]));
            (&record[V2_HEADER..], link)
        }
        _ => return Err(RecordError::Format { seq }),
    };
    let mut event: SecurityEvent =
        postcard::from_bytes(body).map_err(|source| RecordError::Decode { seq, source })?;
    event.seq = seq;
    event.prev_hash = prev_hash;
    Ok(event)
}

/// One dead letter as stored.
#[derive(Debug, Clone)]
pub(super) struct DeadRecord<'a> {
    pub(super) reason: &'a str,
    pub(super) at_micros: i64,
    pub(super) record: &'a [u8],
}

impl<'a> DeadRecord<'a> {
    pub(super) fn encode(reason: &str, at_micros: i64, record: &[u8]) -> Vec<u8> {
        let reason = &reason.as_bytes()[..reason.len().min(1024)];
        let reason = match std::str::from_utf8(reason) {
            Ok(r) => r,
            Err(e) => std::str::from_utf8(&reason[..e.valid_up_to()]).unwrap_or_default(),
        };
        let mut out = Vec::with_capacity(10 + reason.len() + record.len());
        out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(&at_micros.to_le_bytes());
        out.extend_from_slice(record);
        out
    }

    pub(super) fn decode(seq: u64, bytes: &'a [u8]) -> Result<Self, RecordError> {
        let bad = || RecordError::Format { seq };
        let len = usize::from(u16::from_le_bytes(
            bytes
                .get(..2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ));
        let reason =
            std::str::from_utf8(bytes.get(2..2 + len).ok_or_else(bad)?).map_err(|_| bad())?;
        let at = bytes.get(2 + len..10 + len).ok_or_else(bad)?;
        let at_micros = i64::from_le_bytes(at.try_into().map_err(|_| bad())?);
        Ok(Self {
            reason,
            at_micros,
            record: &bytes[10 + len..],
        })
    }
}

/// Counters kept in `meta`, mirrored in memory by the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) next_seq: u64,
    pub(super) bytes: u64,
    pub(super) count: u64,
    /// Evictions since the agent's first start, per severity.
    pub(super) dropped_total: [u64; 5],
    /// Evictions not yet reported by an `agent.buffer_dropped` event.
    pub(super) pending_drop: [u64; 5],
    pub(super) pending_first_seq: u64,
    pub(super) pending_last_seq: u64,
    /// 1 while the buffer is above its high watermark (re-armed below watermark - 10 %).
    pub(super) high_active: u64,
    /// Hash of the last stored event, which the next one links to.
    pub(super) chain_head: Option<EventHash>,
    pub(super) dead_count: u64,
    pub(super) dead_bytes: u64,
}

const SEVERITY_KEYS: [&str; 5] = ["debug", "info", "warn", "error", "critical"];

impl Meta {
    pub(super) fn load(
        txn_table: &impl ReadableTable<&'static str, u64>,
    ) -> Result<Self, redb::Error> {
        let get = |k: &str| -> Result<u64, redb::Error> {
            Ok(txn_table.get(k)?.map_or(0, |v| v.value()))
        };
        let mut meta = Meta {
            next_seq: get("next_seq")?,
            bytes: get("bytes")?,
            count: get("count")?,
            pending_first_seq: get("pending_drop.first_seq")?,
            pending_last_seq: get("pending_drop.last_seq")?,
            high_active: get("high_active")?,
            dead_count: get("dead.count")?,
            dead_bytes: get("dead.bytes")?,
            ..Meta::default()
        };
        if get("chain.set")? == 1 {
            let mut head = [0u8; 32];
            for (i, chunk) in head.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&get(&format!("chain.{i}"))?.to_le_bytes());
            }
            meta.chain_head = Some(head);
        }
        for (i, key) in SEVERITY_KEYS.iter().enumerate() {
            meta.dropped_total[i] = get(&format!("dropped_total.{key}"))?;
            meta.pending_drop[i] = get(&format!("pending_drop.{key}"))?;
        }
        Ok(meta)
    }

    pub(super) fn store(&self, table: &mut Table<&'static str, u64>) -> Result<(), redb::Error> {
        table.insert("next_seq", self.next_seq)?;
        table.insert("bytes", self.bytes)?;
        table.insert("count", self.count)?;
        table.insert("pending_drop.first_seq", self.pending_first_seq)?;
        table.insert("pending_drop.last_seq", self.pending_last_seq)?;
        table.insert("high_active", self.high_active)?;
        table.insert("dead.count", self.dead_count)?;
        table.insert("dead.bytes", self.dead_bytes)?;
        table.insert("chain.set", u64::from(self.chain_head.is_some()))?;
        if let Some(head) = &self.chain_head {
            for (i, chunk) in head.chunks(8).enumerate() {
                let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
                table.insert(format!("chain.{i}").as_str(), word)?;
            }
        }
        for (i, key) in SEVERITY_KEYS.iter().enumerate() {
            table.insert(
                format!("dropped_total.{key}").as_str(),
                self.dropped_total[i],
            )?;
            table.insert(format!("pending_drop.{key}").as_str(), self.pending_drop[i])?;
        }
        Ok(())
    }

    pub(super) fn pending_drops(&self) -> u64 {
        self.pending_drop.iter().sum()
    }

    pub(super) fn note_drop(&mut self, seq: u64, severity: usize) {
        self.dropped_total[severity] += 1;
        if self.pending_drops() == 0 {
            self.pending_first_seq = seq;
        }
        self.pending_drop[severity] += 1;
        self.pending_last_seq = self.pending_last_seq.max(seq);
    }

    /// A JSON summary of the pending drops, for `agent.buffer_dropped`.
    pub(super) fn pending_summary(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut by_severity = serde_json::Map::new();
        for (i, key) in SEVERITY_KEYS.iter().enumerate() {
            if self.pending_drop[i] > 0 {
                by_severity.insert((*key).to_owned(), self.pending_drop[i].into());
            }
        }
        let mut m = serde_json::Map::new();
        m.insert("dropped".into(), self.pending_drops().into());
        m.insert("by_severity".into(), by_severity.into());
        m.insert("first_seq".into(), self.pending_first_seq.into());
        m.insert("last_seq".into(), self.pending_last_seq.into());
        m.insert(
            "dropped_since_install".into(),
            self.dropped_total.iter().sum::<u64>().into(),
        );
        m
    }

    pub(super) fn clear_pending(&mut self) {
        self.pending_drop = [0; 5];
        self.pending_first_seq = 0;
        self.pending_last_seq = 0;
    }
}

/// The tables of one write transaction, opened once per commit.
pub(super) struct Tables<'txn> {
    telemetry: Table<'txn, u64, &'static [u8]>,
    alerts: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            telemetry: txn.open_table(TELEMETRY)?,
            alerts: txn.open_table(ALERTS)?,
        })
    }

    /// Numbers, links and inserts one event, evicting first if the quota needs room.
    pub(super) fn insert(
        &mut self,
        meta: &mut Meta,
        quota: u64,
        e: &mut Encoded,
    ) -> Result<u64, redb::Error> {
        self.make_room(meta, quota, e.cost())?;
        let seq = meta.next_seq;
        meta.chain_head = Some(e.link(seq, meta.chain_head.as_ref()));
        let table = if e.severity.is_telemetry() {
            &mut self.telemetry
        } else {
            &mut self.alerts
        };
        table.insert(seq, e.record.as_slice())?;
        meta.next_seq += 1;
        meta.bytes += e.cost();
        meta.count += 1;
        Ok(seq)
    }

    /// Evicts until `need` more bytes fit: telemetry oldest first, then the oldest alerts.
    pub(super) fn make_room(
        &mut self,
        meta: &mut Meta,
        quota: u64,
        need: u64,
    ) -> Result<(), redb::Error> {
        while meta.bytes + need > quota && meta.count > 0 {
            let popped = match self.telemetry.pop_first()? {
                Some((seq, record)) => Some((
                    seq.value(),
                    record.value().len(),
                    record.value().get(1).copied(),
                )),
                None => self.alerts.pop_first()?.map(|(seq, record)| {
                    (
                        seq.value(),
                        record.value().len(),
                        record.value().get(1).copied(),
                    )
                }),
            };
            let Some((seq, len, severity)) = popped else {
                break;
            };
            meta.bytes = meta.bytes.saturating_sub(len as u64 + RECORD_OVERHEAD);
            meta.count = meta.count.saturating_sub(1);
            meta.note_drop(seq, usize::from(severity.unwrap_or(0)).min(4));
        }
        Ok(())
    }

    /// Deletes one acknowledged event; returns whether it was there.
    pub(super) fn remove(&mut self, meta: &mut Meta, seq: u64) -> Result<bool, redb::Error> {
        Ok(self.take(meta, seq)?.is_some())
    }

    /// Removes one event and returns its record.
    pub(super) fn take(
        &mut self,
        meta: &mut Meta,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, redb::Error> {
        let record = match self.alerts.remove(seq)? {
            Some(record) => record.value().to_vec(),
            None => match self.telemetry.remove(seq)? {
                Some(record) => record.value().to_vec(),
                None => return Ok(None),
            },
        };
        meta.bytes = meta
            .bytes
            .saturating_sub(record.len() as u64 + RECORD_OVERHEAD);
        meta.count = meta.count.saturating_sub(1);
        Ok(Some(record))
    }

    /// Puts a record back under its own seq (a re-queued dead letter), evicting if needed.
    pub(super) fn restore(
        &mut self,
        meta: &mut Meta,
        quota: u64,
        seq: u64,
        record: &[u8],
    ) -> Result<(), redb::Error> {
        let cost = record.len() as u64 + RECORD_OVERHEAD;
        self.make_room(meta, quota, cost)?;
        let telemetry = record
            .get(1)
            .and_then(|b| severity_from_byte(*b))
            .is_none_or(Severity::is_telemetry);
        let table = if telemetry {
            &mut self.telemetry
        } else {
            &mut self.alerts
        };
        table.insert(seq, record)?;
        meta.bytes += cost;
        meta.count += 1;
        Ok(())
    }

    /// Deletes every event with seq <= `up_to`; returns how many.
    pub(super) fn remove_up_to(&mut self, meta: &mut Meta, up_to: u64) -> Result<u64, redb::Error> {
        let mut removed = 0;
        for table in [&mut self.telemetry, &mut self.alerts] {
            loop {
                let len = match table.first()? {
                    Some((seq, record)) if seq.value() <= up_to => record.value().len(),
                    _ => break,
                };
                table.pop_first()?;
                meta.bytes = meta.bytes.saturating_sub(len as u64 + RECORD_OVERHEAD);
                meta.count = meta.count.saturating_sub(1);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Which events a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Everything, in seq order.
    All,
    /// Warn and above only, in seq order.
    Alerts,
    /// Debug and info only, in seq order.
    Telemetry,
}

/// Reads up to `max` events with seq >= `start` in seq order, merging both tables.
pub(super) fn read_range(
    telemetry: &impl ReadableTable<u64, &'static [u8]>,
    alerts: &impl ReadableTable<u64, &'static [u8]>,
    lane: Lane,
    start: u64,
    max: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<u64, redb::Error> {
    type Head = Option<(u64, Vec<u8>)>;
    fn advance(it: Option<&mut Range<'_, u64, &'static [u8]>>) -> Result<Head, redb::Error> {
        match it.and_then(Iterator::next) {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((k.value(), v.value().to_vec())))
            }
            None => Ok(None),
        }
    }
    let mut alert_it = match lane {
        Lane::All | Lane::Alerts => Some(alerts.range(start..)?),
        Lane::Telemetry => None,
    };
    let mut telemetry_it = match lane {
        Lane::All | Lane::Telemetry => Some(telemetry.range(start..)?),
        Lane::Alerts => None,
    };
    let mut a_head = advance(alert_it.as_mut())?;
    let mut t_head = advance(telemetry_it.as_mut())?;
    let mut count = 0;
    while count < max {
        let take_alert = match (&a_head, &t_head) {
            (Some((x, _)), Some((y, _))) => x < y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let head = if take_alert {
            std::mem::replace(&mut a_head, advance(alert_it.as_mut())?)
        } else {
            std::mem::replace(&mut t_head, advance(telemetry_it.as_mut())?)
        };
        if let Some((seq, record)) = head {
            visit(seq, &record);
            count += 1;
        }
    }
    Ok(count)
}
