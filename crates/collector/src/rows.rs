//! The row model of the `events` table, shared by everything that writes or shows events:
//! an event as committed ([`Stored`]) and its JSON view, the collector's own events, and the
//! one `unnest` insert (rollups included) that every write of events goes through.
//!
//! It sits below `store` (the ingest transaction) and `alerts` (which inserts the alerts it
//! raises inside that transaction), so neither has to import the other for it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::chain::Verification;
use super::db::DbError;
use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};

/// An event as committed: the event and the collector's verdict on its chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub event: SecurityEvent,
    pub verification: Verification,
}

/// The collector's own event, stamped now.
pub fn local_event(collector_id: &str, event_type: EventType, severity: Severity) -> SecurityEvent {
    SecurityEvent::new(collector_id, event_type)
        .severity(severity)
        .context("source", "collector")
        .context("collector_id", collector_id)
}

/// `event_data` member of a collector event about one gateway: that gateway's id.
pub const SOURCE_GATEWAY: &str = "source_gateway";
/// `event_data` member of a collector event about one station: the station's id (of the
/// gateway in [`SOURCE_GATEWAY`]).
pub const SOURCE_STATION: &str = "source_station";

/// Records which gateway (and station) a collector event is about. The event itself stays
/// filed under the collector's id, so a gateway's rows (`gateway_id`) are only what that
/// gateway sent, and its counts, seqs and gaps never include the collector's reports.
pub fn about(e: &mut SecurityEvent, gateway: &str, station: Option<&str>) {
    e.event_data.insert(SOURCE_GATEWAY.into(), gateway.into());
    if let Some(s) = station {
        e.event_data.insert(SOURCE_STATION.into(), s.into());
    }
}

/// The gateway an event is about: its sender, or for the collector's own events the one
/// named in `event_data.source_gateway` (None: about no gateway).
pub fn subject_gateway(s: &Stored) -> Option<&str> {
    if s.verification == Verification::Local {
        s.event
            .event_data
            .get(SOURCE_GATEWAY)
            .and_then(Value::as_str)
    } else {
        Some(&s.event.gateway_id)
    }
}

/// The station an event is about, as [`subject_gateway`].
pub fn subject_station(s: &Stored) -> Option<&str> {
    if s.verification == Verification::Local {
        s.event
            .event_data
            .get(SOURCE_STATION)
            .and_then(Value::as_str)
    } else {
        s.event.station_id.as_deref()
    }
}

/// Column arrays of one `unnest` insert.
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) id: Vec<Uuid>,
    event_type: Vec<String>,
    event_data: Vec<Value>,
    context: Vec<Value>,
    ts: Vec<DateTime<Utc>>,
    correlation_id: Vec<Option<Uuid>>,
    user_id: Vec<Option<String>>,
    source_ip: Vec<Option<IpAddr>>,
    severity: Vec<&'static str>,
    pub(crate) gateway_id: Vec<String>,
    station_id: Vec<Option<String>>,
    seq: Vec<Option<i64>>,
    prev_hash: Vec<Option<String>>,
    pub(crate) verification: Vec<&'static str>,
    /// Same order: what to hand the stream and the handlers if the row is inserted; only
    /// kept when someone will look (a stream client, an alert rule on its type).
    pub(crate) stored: Vec<Option<Arc<Stored>>>,
}

impl Rows {
    /// Row `i`'s event id, time, type, severity and the gateway it is about (for a
    /// collector's own event the one in `event_data.source_gateway`): what the SIEM
    /// filters look at.
    pub(crate) fn export_key(
        &self,
        i: usize,
    ) -> (Uuid, DateTime<Utc>, &str, &'static str, Option<&str>) {
        let gateway = if self.verification[i] == Verification::Local.as_str() {
            self.event_data[i]
                .get(SOURCE_GATEWAY)
                .and_then(Value::as_str)
        } else {
            Some(self.gateway_id[i].as_str())
        };
        (
            self.id[i],
            self.ts[i],
            &self.event_type[i],
            self.severity[i],
            gateway,
        )
    }

    pub(crate) fn push(&mut self, e: &SecurityEvent, verification: Verification, chained: bool) {
        self.push_kept(e, verification, chained, true);
    }

    pub(crate) fn push_kept(
        &mut self,
        e: &SecurityEvent,
        verification: Verification,
        chained: bool,
        keep: bool,
    ) {
        self.id.push(e.id);
        self.event_type.push(e.event_type.clone());
        self.event_data.push(Value::Object(e.event_data.clone()));
        self.context.push(Value::Object(e.context.clone()));
        self.ts.push(e.timestamp.to_datetime());
        self.correlation_id.push(e.correlation_id);
        self.user_id.push(e.user_id.clone());
        self.source_ip.push(e.source_ip);
        self.severity.push(e.severity.as_str());
        self.gateway_id.push(e.gateway_id.clone());
        self.station_id.push(e.station_id.clone());
        self.seq
            .push(chained.then(|| i64::try_from(e.seq).unwrap_or(i64::MAX)));
        self.prev_hash.push(e.prev_hash.clone());
        self.verification.push(verification.as_str());
        self.stored.push(keep.then(|| {
            Arc::new(Stored {
                event: e.clone(),
                verification,
            })
        }));
    }
}

/// Inserts the rows that are new and adds exactly those to the rollups (minute buckets for
/// the page's timeline, hour and day for the stats); returns their ids.
pub const INSERT_EVENTS: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[],
                         $6::uuid[], $7::text[], $8::inet[], $9::text[], $10::text[],
                         $11::text[], $12::int8[], $13::text[], $14::text[])
        AS t(id, event_type, event_data, context, ts, correlation_id, user_id, source_ip,
             severity, gateway_id, station_id, seq, prev_hash, verification)
), ins AS (
    INSERT INTO security_events (id, event_type, event_data, context, "timestamp",
        correlation_id, user_id, source_ip, severity, processed, gateway_id, station_id, seq,
        prev_hash, verification)
    SELECT id, event_type, event_data, context, ts, correlation_id, user_id, source_ip,
           severity, true, gateway_id, station_id, seq, prev_hash, verification
    FROM input
    ON CONFLICT DO NOTHING
    RETURNING id, event_type, severity, gateway_id, "timestamp"
), rollup AS (
    INSERT INTO event_metrics AS m (granularity, bucket, event_type, severity, gateway_id, count)
    SELECT g.unit, date_trunc(g.unit, ins."timestamp", 'UTC'), ins.event_type, ins.severity,
           ins.gateway_id, count(*)
    FROM ins CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g(unit)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (granularity, bucket, event_type, severity, gateway_id)
    DO UPDATE SET count = m.count + EXCLUDED.count
)
SELECT id FROM ins
"#;

/// Inserts `rows` (one statement, rollups included); returns the ids really inserted.
pub(crate) async fn insert_rows<S>(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &S,
    rows: &Rows,
) -> Result<HashSet<Uuid>, DbError>
where
    S: tokio_postgres::ToStatement + ?Sized,
{
    Ok(tx
        .query(
            statement,
            &[
                &rows.id,
                &rows.event_type,
                &rows.event_data,
                &rows.context,
                &rows.ts,
                &rows.correlation_id,
                &rows.user_id,
                &rows.source_ip,
                &rows.severity,
                &rows.gateway_id,
                &rows.station_id,
                &rows.seq,
                &rows.prev_hash,
                &rows.verification,
            ],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Inserts one event the collector made (an alert) inside a running transaction.
pub async fn insert_local(tx: &tokio_postgres::Transaction<'_>, s: &Stored) -> Result<(), DbError> {
    let mut rows = Rows::default();
    rows.push(&s.event, s.verification, false);
    insert_rows(tx, INSERT_EVENTS, &rows).await?;
    Ok(())
}

/// A JSON view of a stored row, as the API and the stream show it: the event's wire form
/// plus `verification`.
pub fn stored_json(s: &Stored) -> Value {
    let mut v = serde_json::to_value(&s.event).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("verification".into(), s.verification.as_str().into());
    }
    v
}

/// `Timestamp` of a `DateTime` from the database.
pub fn timestamp_of(dt: DateTime<Utc>) -> Timestamp {
    Timestamp::from_micros(dt.timestamp_micros())
}
