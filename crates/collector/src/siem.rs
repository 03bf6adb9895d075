//! SIEM egress: each `[[siem]]` destination's outbox (`siem_outbox`, written by the ingest
//! transaction, `store::commit`) sent in commit order with `linesentry_siem`'s encoders and
//! transports.
//!
//! One task per destination. It holds the destination's lease in `siem_destinations` (so
//! several collectors on one database never send a destination at once; a dead collector's
//! lease expires), reads the oldest rows of its outbox with their events, encodes them
//! (format, then RFC 5424 framing unless the transport is `https`), sends them as one batch
//! and deletes the rows the receiver took. Delivery is at least once: a crash between the
//! receiver's acknowledgement and the delete sends those events again, which the receiver
//! de-duplicates by event id (CEF `externalId`, SD `id`, OCSF `metadata.uid`, ECS
//! `event.id`). A failed batch is retried, the same batch first, with capped exponential
//! backoff (1 s doubling to 60 s): the outbox grows while a receiver is down, ingest never
//! waits for it. After [`defaults::SIEM_FAILED_AFTER`] failures in a row a
//! `siem.delivery_failed` event is recorded; the first success after it records
//! `siem.recovered`. Both are exported too, in order, once the receiver is back.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::chain::Verification;
use super::config::{defaults, SiemDestination};
use super::db::{DbError, Pool};
use super::ingest::Ingest;
use super::rows::{local_event, timestamp_of};
use linesentry_event::{EventType, SecurityEvent, Severity, SCHEMA_VERSION};
use linesentry_siem::transport::{Answer, Protocol, SendError, Sender};
use linesentry_siem::{syslog, Chain, Exporter, Provenance};

/// Delay before the next attempt after `failures` failures in a row.
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.clamp(1, 7) - 1;
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

/// How long a lease lasts, renewed on every round: past the longest a round can take (a
/// send is bounded by the destination's timeout), so a live sender never loses it, and
/// short enough that a crashed collector's destinations move on soon.
fn lease(d: &SiemDestination) -> Duration {
    (d.transport.timeout * 3 + Duration::from_secs(1)).max(Duration::from_secs(5))
}

const TAKE_LEASE: &str = "INSERT INTO siem_destinations (name, leased_by, leased_until) \
     VALUES ($1, $2, now() + make_interval(secs => $3)) \
     ON CONFLICT (name) DO UPDATE SET leased_by = EXCLUDED.leased_by, leased_until = EXCLUDED.leased_until \
     WHERE siem_destinations.leased_by IS NULL OR siem_destinations.leased_by = EXCLUDED.leased_by \
        OR siem_destinations.leased_until < now() \
     RETURNING consecutive_failures";

const NEXT: &str = "SELECT o.id, e.id, e.event_type, e.event_data, e.context, e.\"timestamp\", \
     e.correlation_id, e.user_id, e.source_ip, e.severity, e.gateway_id, e.station_id, e.seq, \
     e.prev_hash, e.verification \
     FROM siem_outbox o LEFT JOIN security_events e ON e.id = o.event_id AND e.\"timestamp\" = o.event_ts \
     WHERE o.destination = $1 ORDER BY o.id LIMIT $2";

const DELIVERED: &str = "WITH d AS (DELETE FROM siem_outbox WHERE id = ANY($2)) \
     UPDATE siem_destinations SET delivered = delivered + $3, consecutive_failures = 0, \
     failing_since = NULL, last_error = NULL, last_delivered_at = now() WHERE name = $1";

const DROP_ROWS: &str = "DELETE FROM siem_outbox WHERE id = ANY($1)";

const FAILED: &str = "UPDATE siem_destinations SET failed_attempts = failed_attempts + 1, \
     consecutive_failures = consecutive_failures + 1, failing_since = coalesce(failing_since, now()), \
     last_error = $2 WHERE name = $1 RETURNING consecutive_failures";

/// The `siem` object of `/api/v1/status`: per destination, the outbox (`lag`: rows
/// waiting, `oldest_s`: age of the oldest), what was delivered and the current failure.
pub async fn status(pool: &Pool, destinations: &[SiemDestination]) -> Result<Value, DbError> {
    let conn = pool.get().await?;
    let rows = conn
        .client
        .query(
            "SELECT d.name, d.delivered, d.failed_attempts, d.consecutive_failures, \
             extract(epoch FROM now() - d.failing_since)::float8, d.last_error, \
             d.last_delivered_at::text, \
             (SELECT count(*) FROM siem_outbox o WHERE o.destination = d.name), \
             (SELECT extract(epoch FROM now() - min(o.created_at))::float8 FROM siem_outbox o WHERE o.destination = d.name) \
             FROM siem_destinations d WHERE d.name = ANY($1)",
            &[&destinations.iter().map(|d| d.name.as_str()).collect::<Vec<_>>()],
        )
        .await?;
    let mut out = Map::new();
    for d in destinations {
        let row = rows.iter().find(|r| r.get::<_, &str>(0) == d.name);
        let v = match row {
            None => json!({
                "transport": d.transport.protocol.as_str(), "format": d.format.as_str(),
                "lag": 0, "delivered": 0, "failed_attempts": 0, "failing": false,
            }),
            Some(r) => {
                let consecutive: i32 = r.get(3);
                json!({
                    "transport": d.transport.protocol.as_str(),
                    "format": d.format.as_str(),
                    "lag": r.get::<_, i64>(7),
                    "oldest_s": r.get::<_, Option<f64>>(8),
                    "delivered": r.get::<_, i64>(1),
                    "failed_attempts": r.get::<_, i64>(2),
                    "consecutive_failures": consecutive,
                    "failing": consecutive > 0,
                    "failing_for_s": r.get::<_, Option<f64>>(4),
                    "last_error": r.get::<_, Option<String>>(5),
                    "last_delivered_at": r.get::<_, Option<String>>(6),
                })
            }
        };
        out.insert(d.name.clone(), v);
    }
    Ok(Value::Object(out))
}

/// Sends every destination's outbox until `shutdown`. An idle destination looks again
/// every 200 ms.
pub async fn run(
    pool: Pool,
    destinations: Vec<SiemDestination>,
    ingest: Ingest,
    shutdown: CancellationToken,
) {
    // Dropping the set (this task aborted, as `Collector::abort` does) aborts them all.
    let mut tasks = tokio::task::JoinSet::new();
    for d in destinations {
        tasks.spawn(deliver(pool.clone(), d, ingest.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// One destination's loop.
async fn deliver(pool: Pool, d: SiemDestination, ingest: Ingest, shutdown: CancellationToken) {
    let holder = format!("{}:{}", ingest.collector_id(), Uuid::now_v7());
    let exporter = Exporter::new(ingest.collector_id());
    let mut sender: Option<Sender> = None;
    loop {
        let pause = match round(&pool, &d, &holder, &exporter, &mut sender).await {
            Ok(Round::Sent {
                events: n,
                answer,
                failures_before,
            }) => {
                // From the database, so a collector that takes over after a crash still
                // reports the recovery of a failure another one reported.
                if failures_before >= defaults::SIEM_FAILED_AFTER {
                    tracing::info!(siem = %d.name, "SIEM destination delivers again");
                    let e = local_event(
                        ingest.collector_id(),
                        EventType::SiemRecovered,
                        Severity::Info,
                    )
                    .data("destination", d.name.clone())
                    .data("transport", d.transport.protocol.as_str());
                    ingest.submit_local(vec![e]).await;
                }
                tracing::debug!(siem = %d.name, events = n, answer = %answer.text, "SIEM batch delivered");
                continue;
            }
            Ok(Round::Idle) => None,
            Ok(Round::NotLeased) => Some(lease(&d) / 4),
            Ok(Round::Failed { failures, error }) => {
                tracing::warn!(siem = %d.name, failures, error = %error, "SIEM delivery failed; will retry");
                // Once per outage: when the count of failures in a row reaches the threshold.
                if failures == defaults::SIEM_FAILED_AFTER {
                    tracing::error!(siem = %d.name, failures, error = %error, "SIEM destination keeps failing; its outbox grows");
                    let e = local_event(
                        ingest.collector_id(),
                        EventType::SiemDeliveryFailed,
                        Severity::Error,
                    )
                    .data("destination", d.name.clone())
                    .data("transport", d.transport.protocol.as_str())
                    .data("address", d.transport.address.clone())
                    .data("failures", failures)
                    .data("error", error);
                    ingest.submit_local(vec![e]).await;
                }
                Some(retry_delay(failures))
            }
            Err(e) => {
                tracing::warn!(siem = %d.name, error = %e, "SIEM outbox unavailable; retrying");
                Some(Duration::from_secs(1))
            }
        };
        let pause = pause.unwrap_or(Duration::from_millis(200));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if let Some(mut s) = sender {
        s.close().await;
    }
}

enum Round {
    Sent {
        events: usize,
        answer: Answer,
        /// Failures in a row before this success.
        failures_before: u32,
    },
    Idle,
    NotLeased,
    Failed {
        failures: u32,
        error: String,
    },
}

/// One batch: lease, read, encode, send, record.
async fn round(
    pool: &Pool,
    d: &SiemDestination,
    holder: &str,
    exporter: &Exporter,
    sender: &mut Option<Sender>,
) -> Result<Round, DbError> {
    let conn = pool.get().await?;
    let leased = conn
        .client
        .query_opt(TAKE_LEASE, &[&d.name, &holder, &lease(d).as_secs_f64()])
        .await?;
    let Some(leased) = leased else {
        return Ok(Round::NotLeased);
    };
    let failures_before = u32::try_from(leased.get::<_, i32>(0)).unwrap_or(0);
    let limit = i64::try_from(d.batch).unwrap_or(500);
    let rows = conn.client.query(NEXT, &[&d.name, &limit]).await?;
    if rows.is_empty() {
        return Ok(Round::Idle);
    }
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    let mut records: Vec<String> = Vec::with_capacity(rows.len());
    let mut dropped: Vec<i64> = Vec::new();
    for r in &rows {
        let outbox_id: i64 = r.get(0);
        let Some(event_id) = r.get::<_, Option<Uuid>>(1) else {
            // Gone from the store (retention dropped its month) before it was sent.
            tracing::warn!(siem = %d.name, outbox = outbox_id, "an exported event is no longer stored; skipped");
            dropped.push(outbox_id);
            continue;
        };
        let event = event_of(r, event_id);
        let chain = chain_of(r.get::<_, &str>(14));
        match encode(d, &event, exporter, chain) {
            Ok(text) => {
                ids.push(outbox_id);
                records.push(text);
            }
            Err(e) => {
                tracing::error!(siem = %d.name, event = %event_id, error = %e, "an event cannot be encoded for this destination; skipped");
                dropped.push(outbox_id);
            }
        }
    }
    if !dropped.is_empty() {
        conn.client.execute(DROP_ROWS, &[&dropped]).await?;
    }
    if records.is_empty() {
        return Ok(Round::Sent {
            events: 0,
            answer: Answer {
                records: 0,
                text: String::new(),
            },
            failures_before: 0,
        });
    }
    // The connection goes back to the pool while the receiver is waited for.
    drop(conn);
    let result = match sender {
        Some(s) => s.send(&records).await,
        None => match Sender::new(d.transport.clone()) {
            Ok(s) => sender.insert(s).send(&records).await,
            Err(e) => Err(e),
        },
    };
    let conn = pool.get().await?;
    match result {
        Ok(answer) => {
            let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
            conn.client.execute(DELIVERED, &[&d.name, &ids, &n]).await?;
            Ok(Round::Sent {
                events: ids.len(),
                answer,
                failures_before,
            })
        }
        Err(e) => {
            let acknowledged = e.acknowledged().min(ids.len());
            if acknowledged > 0 {
                let n = i64::try_from(acknowledged).unwrap_or(i64::MAX);
                conn.client
                    .execute(DELIVERED, &[&d.name, &ids[..acknowledged].to_vec(), &n])
                    .await?;
            }
            if matches!(e, SendError::Settings(_)) {
                *sender = None;
            }
            let error = e.to_string();
            let failures: i32 = conn
                .client
                .query_one(FAILED, &[&d.name, &error])
                .await?
                .get(0);
            Ok(Round::Failed {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                error,
            })
        }
    }
}

/// The event of a [`NEXT`] row (columns 1 to 13).
fn event_of(r: &tokio_postgres::Row, id: Uuid) -> SecurityEvent {
    let seq: Option<i64> = r.get(12);
    SecurityEvent {
        schema_version: SCHEMA_VERSION,
        id,
        seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        gateway_id: r.get(10),
        station_id: r.get(11),
        event_type: r.get(2),
        severity: r.get::<_, &str>(9).parse().unwrap_or(Severity::Info),
        timestamp: timestamp_of(r.get(5)),
        correlation_id: r.get(6),
        user_id: r.get(7),
        source_ip: r.get(8),
        event_data: object(r.get(3)),
        context: object(r.get(4)),
        prev_hash: r.get(13),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn chain_of(verification: &str) -> Chain {
    match verification.parse::<Verification>() {
        Ok(Verification::Verified) => Chain::Verified,
        Ok(Verification::Pending) => Chain::Pending,
        Ok(Verification::Broken) => Chain::Broken,
        Ok(Verification::Gap) => Chain::Gap,
        Ok(Verification::Local) => Chain::Local,
        Err(_) => Chain::Unchecked,
    }
}

/// `event` as this destination sends it: the body in its format, inside RFC 5424 unless
/// the transport is `https` (JSON batches).
pub fn encode(
    d: &SiemDestination,
    event: &SecurityEvent,
    exporter: &Exporter,
    chain: Chain,
) -> Result<String, linesentry_siem::EncodeError> {
    let provenance = Provenance {
        chain,
        signature: None,
    };
    let body = d.format.encode(event, exporter, &provenance);
    if d.transport.protocol == Protocol::Https {
        Ok(body)
    } else {
        syslog::frame(event, &body, &d.syslog, &provenance)
    }
}

/// `linesentry-collector siem test NAME`: one `siem.test` event, encoded as the destination
/// sends events, sent on a connection of its own; returns the message and what the receiver
/// answered. Not stored, not in the outbox.
pub async fn send_test(
    d: &SiemDestination,
    collector_id: &str,
) -> Result<(String, Answer), String> {
    let event = local_event(collector_id, EventType::SiemTest, Severity::Info)
        .data("destination", d.name.clone())
        .data(
            "message",
            "linesentry SIEM test message: if you read this, the destination works",
        );
    let text =
        encode(d, &event, &Exporter::new(collector_id), Chain::Local).map_err(|e| e.to_string())?;
    let mut sender = Sender::new(d.transport.clone()).map_err(|e| e.to_string())?;
    let answer = sender
        .send(std::slice::from_ref(&text))
        .await
        .map_err(|e| e.to_string())?;
    sender.close().await;
    Ok((text, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(7), Duration::from_secs(60));
        assert_eq!(retry_delay(500), Duration::from_secs(60));
    }

    #[test]
    fn every_verdict_maps_to_its_chain_name() {
        for v in ["verified", "pending", "broken", "gap", "local"] {
            assert_eq!(chain_of(v).as_str(), v);
        }
        assert_eq!(chain_of("other"), Chain::Unchecked);
    }
}
