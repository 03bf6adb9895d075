//! The ingest transaction: everything one commit writes, and nothing else.
//!
//! A transaction takes one or more units of [`Work`] (verified gateway batches, refused
//! batches, the collector's own events) and, holding a per-gateway advisory lock so that
//! several workers and several collectors see each gateway's chain one batch at a time:
//!
//! 1. reads the chain links next to the arriving seqs and judges them ([`super::chain`]);
//! 2. quarantines refused batches (once per distinct body);
//! 3. inserts every event in one `unnest` statement with `ON CONFLICT DO NOTHING`, and in the
//!    same statement adds the rows it really inserted to the hour and day rollups;
//! 4. records chain links, resolves waiting ones, records gaps and what explains them;
//! 5. updates the asset inventory from the new gateway events ([`super::assets`]);
//! 6. runs the alert handlers over the new events ([`super::alerts`]);
//! 7. updates the gateways' counters.
//!
//! Either all of it commits or none of it does. Locks are taken in gateway-id order, so
//! two transactions never wait on each other in a cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::alerts::{self, AlertContext};
use super::assets;
use super::chain::{self, Finding, NewLink, Outcome, StoredLink, Verification};
use super::db::{Conn, DbError};
use super::rows::{about, insert_rows, local_event, subject_gateway, Rows, Stored, INSERT_EVENTS};
use linesentry_event::integrity::{hex, EventHash};
use linesentry_event::{EventType, SecurityEvent, Severity};

/// How a batch reached the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Mqtt,
    Https,
    Local,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Https => "https",
            Transport::Local => "local",
        }
    }
}

/// One unit of a transaction.
#[derive(Debug, Clone)]
pub enum Work {
    /// A batch whose signature verified with the gateway's registered key.
    Genuine {
        gateway_id: String,
        events: Vec<SecurityEvent>,
        hashes: Vec<EventHash>,
    },
    /// A batch that is not stored as genuine: kept in quarantine, reported by an event.
    Refused(Refusal),
    /// Events the collector makes itself (api.access, alerts, gateway status).
    Local(Vec<SecurityEvent>),
}

impl Work {
    /// The gateway whose lock this work needs (`collector_id` for local events).
    pub fn lock_key<'a>(&'a self, collector_id: &'a str) -> &'a str {
        match self {
            Work::Genuine { gateway_id, .. } => gateway_id,
            Work::Refused(r) => r.gateway_id.as_deref().unwrap_or(collector_id),
            Work::Local(_) => collector_id,
        }
    }

    pub fn event_count(&self) -> usize {
        match self {
            Work::Genuine { events, .. } | Work::Local(events) => events.len(),
            Work::Refused(_) => 1,
        }
    }
}

/// A refused batch.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub transport: Transport,
    /// MQTT topic or HTTPS peer address.
    pub origin: String,
    /// The gateway the batch claims to come from, if it could be read.
    pub gateway_id: Option<String>,
    /// Short reason: `bad_signature`, `unknown_key`, `unknown_gateway`, `invalid_events`...
    pub kind: &'static str,
    pub reason: String,
    /// An integrity failure (reported as `security.violation`) rather than a malformed batch
    /// (reported as `ingest.rejected`).
    pub integrity: bool,
    pub body: Vec<u8>,
    /// Extra members for the report's event_data (key_id, event ids and seqs...).
    pub detail: Map<String, Value>,
}

/// What a transaction did for one unit of work, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkReport {
    pub inserted: usize,
    pub duplicates: usize,
    /// New events per verification status.
    pub statuses: BTreeMap<&'static str, usize>,
    /// Refused work: the quarantine id, and whether this body was already quarantined.
    pub quarantine: Option<(Uuid, bool)>,
}

/// What a transaction did.
#[derive(Debug, Default)]
pub struct CommitReport {
    pub works: Vec<WorkReport>,
    /// Every event this transaction inserted (gateway events, reports, alerts), for the live
    /// stream.
    pub new_events: Vec<Arc<Stored>>,
    /// Alerts raised, for the webhook sender.
    pub alerts: usize,
}

/// The report of an integrity finding about `gateway` (None: the batch named none). Filed
/// under the collector's id, the gateway in `event_data.source_gateway`.
fn violation(
    collector_id: &str,
    gateway: Option<&str>,
    kind: &str,
    reason: String,
    mut data: Map<String, Value>,
) -> SecurityEvent {
    let mut e = local_event(collector_id, EventType::SecurityViolation, Severity::Error);
    if let Some(gw) = gateway {
        about(&mut e, gw, None);
    }
    data.insert("category".into(), "integrity".into());
    data.insert("kind".into(), kind.into());
    data.insert("reason".into(), reason.into());
    data.insert("attack".into(), json!(["T0856", "T0830"]));
    for (k, v) in data {
        e.event_data.insert(k, v);
    }
    e
}

const LOCK_GATEWAY: &str = "SELECT pg_advisory_xact_lock(hashtextextended('gw:' || $1, 0))";

/// The held links of a batch whose seqs are (nearly) contiguous: one range scan instead of
/// a probe per seq. The range covers every seq - 1, seq and seq + 1 of the batch.
const HELD_RANGE: &str = "SELECT seq, hash, prev_hash, status FROM chain_links \
     WHERE gateway_id = $1 AND seq BETWEEN $2 AND $3";

const HELD_LINKS: &str = "SELECT seq, hash, prev_hash, status FROM chain_links \
     WHERE gateway_id = $1 AND seq = ANY($2::int8[])";

const MAX_SEQ_BELOW: &str = "SELECT max(seq) FROM chain_links WHERE gateway_id = $1 AND seq < $2";

const INSERT_LINKS: &str = "INSERT INTO chain_links \
     (gateway_id, seq, hash, prev_hash, status, event_id, event_ts) \
     SELECT $1, * FROM unnest($2::int8[], $3::bytea[], $4::bytea[], $5::text[], $6::uuid[], \
     $7::timestamptz[]) ON CONFLICT DO NOTHING";

const RESOLVE_LINKS: &str = r#"
WITH r AS (
    SELECT * FROM unnest($2::int8[], $3::text[]) AS r(seq, status)
), l AS (
    UPDATE chain_links c SET status = r.status FROM r
    WHERE c.gateway_id = $1 AND c.seq = r.seq
    RETURNING c.event_id, c.event_ts, c.status
)
UPDATE security_events e SET verification = l.status FROM l
WHERE e.id = l.event_id AND e."timestamp" = l.event_ts
"#;

const QUARANTINE: &str = "INSERT INTO quarantine \
     (id, digest, transport, origin, gateway_id, kind, reason, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (digest) DO NOTHING RETURNING id";

const QUARANTINED_ID: &str = "SELECT id FROM quarantine WHERE digest = $1";

const INSERT_EXPLANATIONS: &str = "INSERT INTO chain_explanations \
     (gateway_id, first_seq, last_seq, reason, event_id) \
     SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::text[], $5::uuid[]) \
     ON CONFLICT DO NOTHING";

/// Gaps declared earlier that a late report now explains.
const EXPLAIN_GAPS: &str = r"
WITH u AS (
    UPDATE chain_gaps SET explanation = $4, explained_by = $5
    WHERE gateway_id = $1 AND explained_by IS NULL AND explanation IS NULL
      AND first_seq >= $2 AND last_seq <= $3
    RETURNING 1
)
UPDATE gateways SET gaps_unexplained = gaps_unexplained - (SELECT count(*) FROM u)
WHERE gateway_id = $1
";

const INSERT_GAP: &str = r"
WITH g AS (
    INSERT INTO chain_gaps (gateway_id, first_seq, last_seq, next_seq, explanation,
                            explained_by, violation_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (gateway_id, next_seq) DO NOTHING
    RETURNING last_seq - first_seq + 1 AS missing, explanation IS NULL AS unexplained
)
UPDATE gateways SET gaps = gaps + 1,
    gaps_unexplained = gaps_unexplained + (SELECT count(*) FROM g WHERE unexplained),
    missing_events = missing_events + (SELECT coalesce(sum(missing), 0) FROM g)
WHERE gateway_id = $1 AND EXISTS (SELECT 1 FROM g)
";

const UPDATE_GATEWAYS: &str = r"
UPDATE gateways g SET
    last_seen = CASE WHEN u.events > 0 THEN now() ELSE g.last_seen END,
    last_seq = GREATEST(g.last_seq, u.last_seq),
    events_total = g.events_total + u.events,
    broken = g.broken + u.broken,
    rejected_batches = g.rejected_batches + u.rejected
FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[])
    AS u(gateway_id, last_seq, events, broken, rejected)
WHERE g.gateway_id = u.gateway_id
";

/// Per-gateway counters of one transaction.
#[derive(Default)]
struct GatewayTally {
    last_seq: Option<i64>,
    events: i64,
    broken: i64,
    rejected: i64,
}

/// A chain link to insert.
struct LinkRow {
    seq: u64,
    hash: EventHash,
    prev: Option<EventHash>,
    status: Verification,
    event_id: Uuid,
    ts: DateTime<Utc>,
}

/// A restart or gap to record once the links are in.
struct GapToRecord {
    gateway_id: String,
    next_seq: u64,
    explanation: Option<(String, Uuid)>,
    violation: Option<Uuid>,
}

/// Runs one ingest transaction over `works`. Not cancel-safe: dropped midway, the
/// transaction rolls back (nothing is written) and the caller must not acknowledge.
#[allow(clippy::too_many_lines)]
pub async fn commit(
    conn: &mut Conn,
    works: &[&Work],
    collector_id: &str,
    alert_ctx: &AlertContext,
    streaming: bool,
) -> Result<CommitReport, DbError> {
    let keep = |e: &SecurityEvent| streaming || alert_ctx.watches(&e.event_type);
    let insert_events = conn.prepared(INSERT_EVENTS).await?;
    let lock = conn.prepared(LOCK_GATEWAY).await?;
    let held_links = conn.prepared(HELD_LINKS).await?;
    let held_range = conn.prepared(HELD_RANGE).await?;
    let insert_links = conn.prepared(INSERT_LINKS).await?;
    let tx = conn.client.transaction().await?;

    let gateways: BTreeSet<&str> = works.iter().map(|w| w.lock_key(collector_id)).collect();
    for gw in &gateways {
        tx.execute(&lock, &[gw]).await?;
    }

    let mut rows = Rows::default();
    let mut reports: Vec<WorkReport> = vec![WorkReport::default(); works.len()];
    // For each gateway row index ranges: (work index, row index) to count what got in.
    let mut row_owner: Vec<Option<usize>> = Vec::new();
    let mut tally: BTreeMap<String, GatewayTally> = BTreeMap::new();
    let mut links_by_gw: BTreeMap<String, Vec<LinkRow>> = BTreeMap::new();
    let mut resolved_by_gw: BTreeMap<String, Vec<(u64, Verification)>> = BTreeMap::new();
    let mut explanations: BTreeMap<String, Vec<(u64, u64, String, Uuid)>> = BTreeMap::new();
    let mut gaps: Vec<GapToRecord> = Vec::new();
    // New gateway events, for the asset inventory once we know which really got in.
    let mut station_events: Vec<&SecurityEvent> = Vec::new();

    // Genuine batches, per gateway (one transaction may hold several batches of one).
    let mut genuine: BTreeMap<&str, Vec<(usize, &SecurityEvent, EventHash)>> = BTreeMap::new();
    for (wi, w) in works.iter().enumerate() {
        if let Work::Genuine {
            gateway_id,
            events,
            hashes,
        } = w
        {
            let list = genuine.entry(gateway_id.as_str()).or_default();
            list.extend(events.iter().zip(hashes).map(|(e, h)| (wi, e, *h)));
        }
    }
    for (gw, list) in &genuine {
        let mut wanted: HashSet<i64> = HashSet::new();
        for (_, e, _) in list {
            let s = i64::try_from(e.seq).unwrap_or(i64::MAX);
            wanted.extend([s - 1, s, s.saturating_add(1)]);
        }
        let (lo, hi) = (
            wanted.iter().min().copied().unwrap_or(0),
            wanted.iter().max().copied().unwrap_or(0),
        );
        // A range when it is not much wider than the seqs asked for (the usual in-order
        // batch), else one probe per seq (a batch of scattered re-sends).
        let held_rows =
            if hi.saturating_sub(lo) < 2 * i64::try_from(wanted.len()).unwrap_or(i64::MAX) {
                tx.query(&held_range, &[gw, &lo, &hi]).await?
            } else {
                let wanted: Vec<i64> = wanted.into_iter().collect();
                tx.query(&held_links, &[gw, &wanted]).await?
            };
        let held: Vec<StoredLink> = held_rows
            .iter()
            .filter_map(|r| {
                Some(StoredLink {
                    seq: u64::try_from(r.get::<_, i64>(0)).ok()?,
                    hash: r.get::<_, &[u8]>(1).try_into().ok()?,
                    prev: r.get::<_, Option<&[u8]>>(2).and_then(|p| p.try_into().ok()),
                    status: r.get::<_, &str>(3).parse().ok()?,
                })
            })
            .collect();
        let arriving: Vec<NewLink> = list
            .iter()
            .map(|(_, e, h)| NewLink {
                seq: e.seq,
                hash: *h,
                prev: e
                    .prev_hash
                    .as_deref()
                    .and_then(linesentry_event::integrity::parse_hash),
                explains_restart: e.event_type == "agent.buffer_reset",
            })
            .collect();
        let assessment = chain::assess(&held, &arriving);
        let t = tally.entry((*gw).to_owned()).or_default();
        let by_seq: HashMap<u64, (&SecurityEvent, EventHash)> =
            list.iter().map(|(_, e, h)| (e.seq, (*e, *h))).collect();
        for (i, (wi, e, h)) in list.iter().enumerate() {
            match assessment.outcomes[i] {
                Outcome::Duplicate => reports[*wi].duplicates += 1,
                Outcome::New(status) => {
                    rows.push_kept(e, status, true, keep(e));
                    station_events.push(*e);
                    row_owner.push(Some(*wi));
                    *reports[*wi].statuses.entry(status.as_str()).or_default() += 1;
                    let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
                    t.last_seq = Some(t.last_seq.map_or(seq, |s| s.max(seq)));
                    links_by_gw
                        .entry((*gw).to_owned())
                        .or_default()
                        .push(LinkRow {
                            seq: e.seq,
                            hash: *h,
                            prev: e
                                .prev_hash
                                .as_deref()
                                .and_then(linesentry_event::integrity::parse_hash),
                            status,
                            event_id: e.id,
                            ts: e.timestamp.to_datetime(),
                        });
                    for (first, last, reason) in explained_ranges(e) {
                        explanations
                            .entry((*gw).to_owned())
                            .or_default()
                            .push((first, last, reason, e.id));
                    }
                }
            }
        }
        resolved_by_gw.insert((*gw).to_owned(), assessment.resolved.clone());
        for finding in assessment.findings {
            let (kind, seq, reason, mut data) = match &finding {
                Finding::Broken {
                    seq,
                    expected,
                    found,
                } => (
                    "broken_chain",
                    *seq,
                    format!(
                        "event seq {seq} names a predecessor hash that differs from the hash of the event held at seq {}: an event was altered, removed or inserted",
                        seq - 1
                    ),
                    Map::from_iter([
                        ("expected_prev_hash".to_owned(), hex(expected).into()),
                        (
                            "found_prev_hash".to_owned(),
                            found.map(|f| hex(&f)).into(),
                        ),
                    ]),
                ),
                Finding::SeqReused { seq, held, arrived } => (
                    "seq_reused",
                    *seq,
                    format!("a second, different event claims seq {seq}"),
                    Map::from_iter([
                        ("held_hash".to_owned(), hex(held).into()),
                        ("arrived_hash".to_owned(), hex(arrived).into()),
                    ]),
                ),
                Finding::Restart { seq, explained } => {
                    if *explained {
                        let id = by_seq.get(seq).map(|(e, _)| e.id).unwrap_or_default();
                        gaps.push(GapToRecord {
                            gateway_id: (*gw).to_owned(),
                            next_seq: *seq,
                            explanation: Some(("agent.buffer_reset".into(), id)),
                            violation: None,
                        });
                        continue;
                    }
                    (
                        "chain_restart",
                        *seq,
                        format!("event seq {seq} starts a new chain (no prev_hash) without an agent.buffer_reset event"),
                        Map::new(),
                    )
                }
            };
            t.broken += i64::from(!matches!(finding, Finding::Restart { .. }));
            data.insert("gateway_id".into(), (*gw).into());
            data.insert("seq".into(), seq.into());
            if let Some((e, h)) = by_seq.get(&seq) {
                data.insert("event_id".into(), e.id.to_string().into());
                data.insert("event_type".into(), e.event_type.clone().into());
                data.insert("event_hash".into(), hex(h).into());
            }
            let v = violation(collector_id, Some(gw), kind, reason, data);
            if let Finding::Restart { seq, .. } = finding {
                gaps.push(GapToRecord {
                    gateway_id: (*gw).to_owned(),
                    next_seq: seq,
                    explanation: None,
                    violation: Some(v.id),
                });
            }
            rows.push(&v, Verification::Local, false);
            row_owner.push(None);
        }
    }

    // Refused batches: quarantined once per distinct body, reported once.
    for (wi, w) in works.iter().enumerate() {
        let Work::Refused(r) = w else { continue };
        let digest: Vec<u8> = Sha256::digest(&r.body).to_vec();
        let id = Uuid::now_v7();
        let gw = r.gateway_id.as_deref();
        let fresh = tx
            .query_opt(
                QUARANTINE,
                &[
                    &id,
                    &digest,
                    &r.transport.as_str(),
                    &r.origin,
                    &gw,
                    &r.kind,
                    &r.reason,
                    &r.body,
                ],
            )
            .await?
            .is_some();
        let qid = if fresh {
            id
        } else {
            tx.query_one(QUARANTINED_ID, &[&digest]).await?.get(0)
        };
        reports[wi].quarantine = Some((qid, !fresh));
        if !fresh {
            continue;
        }
        if let Some(gw) = gw {
            tally.entry(gw.to_owned()).or_default().rejected += 1;
        }
        let mut data = r.detail.clone();
        data.insert("transport".into(), r.transport.as_str().into());
        data.insert("origin".into(), r.origin.clone().into());
        data.insert("quarantine_id".into(), qid.to_string().into());
        data.insert("batch_sha256".into(), hex(&digest).into());
        data.insert("bytes".into(), r.body.len().into());
        let report = if r.integrity {
            violation(collector_id, gw, r.kind, r.reason.clone(), data)
        } else {
            let mut e = local_event(collector_id, EventType::IngestRejected, Severity::Warn);
            data.insert("kind".into(), r.kind.into());
            data.insert("reason".into(), r.reason.clone().into());
            e.event_data = data;
            if let Some(gw) = gw {
                about(&mut e, gw, None);
            }
            e
        };
        rows.push(&report, Verification::Local, false);
        row_owner.push(None);
    }

    // The collector's own events.
    for (wi, w) in works.iter().enumerate() {
        if let Work::Local(events) = w {
            for e in events {
                rows.push(e, Verification::Local, false);
                row_owner.push(Some(wi));
            }
        }
    }

    // Gap ranges of restarts need the highest seq held below them.
    let mut gap_ranges: Vec<Option<(u64, u64)>> = Vec::with_capacity(gaps.len());
    for g in &gaps {
        let next = i64::try_from(g.next_seq).unwrap_or(i64::MAX);
        let below: Option<i64> = tx
            .query_one(MAX_SEQ_BELOW, &[&g.gateway_id, &next])
            .await?
            .get(0);
        let in_batch = links_by_gw
            .get(&g.gateway_id)
            .and_then(|l| l.iter().map(|x| x.seq).filter(|s| *s < g.next_seq).max());
        let below = below
            .and_then(|b| u64::try_from(b).ok())
            .max(in_batch)
            .unwrap_or(0);
        gap_ranges.push((below + 1 < g.next_seq).then_some((below + 1, g.next_seq - 1)));
    }

    // Every event of the transaction in one statement.
    let inserted = insert_rows(&tx, &insert_events, &rows).await?;
    let mut new_events = Vec::with_capacity(inserted.len());
    for (i, stored) in rows.stored.iter().enumerate() {
        let is_new = inserted.contains(&rows.id[i]);
        if let Some(wi) = row_owner[i] {
            if is_new {
                reports[wi].inserted += 1;
            } else if matches!(works[wi], Work::Local(_)) {
                reports[wi].duplicates += 1;
            }
        }
        if is_new {
            if rows.verification[i] != Verification::Local.as_str() {
                tally.entry(rows.gateway_id[i].clone()).or_default().events += 1;
            }
            if let Some(s) = stored {
                new_events.push(Arc::clone(s));
            }
        }
    }

    for (gw, links) in &links_by_gw {
        let seqs: Vec<i64> = links
            .iter()
            .map(|l| i64::try_from(l.seq).unwrap_or(i64::MAX))
            .collect();
        let hashes: Vec<&[u8]> = links.iter().map(|l| &l.hash[..]).collect();
        let prevs: Vec<Option<&[u8]>> = links
            .iter()
            .map(|l| l.prev.as_ref().map(|p| &p[..]))
            .collect();
        let statuses: Vec<&str> = links.iter().map(|l| l.status.as_str()).collect();
        let ids: Vec<Uuid> = links.iter().map(|l| l.event_id).collect();
        let ts: Vec<DateTime<Utc>> = links.iter().map(|l| l.ts).collect();
        tx.execute(
            &insert_links,
            &[gw, &seqs, &hashes, &prevs, &statuses, &ids, &ts],
        )
        .await?;
    }
    for (gw, resolved) in &resolved_by_gw {
        if resolved.is_empty() {
            continue;
        }
        let seqs: Vec<i64> = resolved
            .iter()
            .map(|r| i64::try_from(r.0).unwrap_or(i64::MAX))
            .collect();
        let statuses: Vec<&str> = resolved.iter().map(|r| r.1.as_str()).collect();
        tx.execute(RESOLVE_LINKS, &[gw, &seqs, &statuses]).await?;
    }
    for (gw, list) in &explanations {
        let firsts: Vec<i64> = list
            .iter()
            .map(|x| i64::try_from(x.0).unwrap_or(i64::MAX))
            .collect();
        let lasts: Vec<i64> = list
            .iter()
            .map(|x| i64::try_from(x.1).unwrap_or(i64::MAX))
            .collect();
        let reasons: Vec<&str> = list.iter().map(|x| x.2.as_str()).collect();
        let ids: Vec<Uuid> = list.iter().map(|x| x.3).collect();
        tx.execute(INSERT_EXPLANATIONS, &[gw, &firsts, &lasts, &reasons, &ids])
            .await?;
        for (i, id) in ids.iter().enumerate() {
            tx.execute(EXPLAIN_GAPS, &[gw, &firsts[i], &lasts[i], &reasons[i], id])
                .await?;
        }
    }
    for (g, range) in gaps.iter().zip(&gap_ranges) {
        let (first, last) = range.unwrap_or((g.next_seq, g.next_seq.saturating_sub(1)));
        if range.is_none() && g.violation.is_none() {
            continue;
        }
        let (explanation, explained_by) = match &g.explanation {
            Some((text, id)) => (Some(text.as_str()), Some(*id)),
            None => (None, None),
        };
        let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        tx.execute(
            INSERT_GAP,
            &[
                &g.gateway_id,
                &to_i(first),
                &to_i(last),
                &to_i(g.next_seq),
                &explanation,
                &explained_by,
                &g.violation,
            ],
        )
        .await?;
    }

    // The asset inventory, from the gateway events really inserted.
    station_events.retain(|e| inserted.contains(&e.id));
    assets::record(&tx, &station_events).await?;

    // Handlers: alerts over what was really inserted, in this transaction.
    let raised = alerts::run(&tx, alert_ctx, &new_events).await?;
    let alert_count = raised.len();

    // The SIEM outbox: every new event (and alert) each destination's filters take.
    write_siem_outbox(&tx, alert_ctx, &rows, &inserted, &raised).await?;
    new_events.extend(raised);

    if !tally.is_empty() {
        let ids: Vec<&str> = tally.keys().map(String::as_str).collect();
        let last: Vec<Option<i64>> = tally.values().map(|t| t.last_seq).collect();
        let events: Vec<i64> = tally.values().map(|t| t.events).collect();
        let broken: Vec<i64> = tally.values().map(|t| t.broken).collect();
        let rejected: Vec<i64> = tally.values().map(|t| t.rejected).collect();
        tx.execute(UPDATE_GATEWAYS, &[&ids, &last, &events, &broken, &rejected])
            .await?;
    }
    tx.commit().await?;
    Ok(CommitReport {
        works: reports,
        new_events,
        alerts: alert_count,
    })
}

/// Writes the SIEM outbox rows of the events `rows` really inserted (`inserted`) and of
/// the alerts raised with them, in that order, inside the transaction that stores them.
async fn write_siem_outbox(
    tx: &tokio_postgres::Transaction<'_>,
    alert_ctx: &AlertContext,
    rows: &Rows,
    inserted: &HashSet<Uuid>,
    raised: &[Arc<Stored>],
) -> Result<(), DbError> {
    if alert_ctx.siem.is_empty() {
        return Ok(());
    }
    let mut outbox = SiemOutbox::default();
    for i in 0..rows.id.len() {
        if inserted.contains(&rows.id[i]) {
            let (id, ts, event_type, severity, gateway) = rows.export_key(i);
            let severity = severity.parse().unwrap_or(Severity::Info);
            outbox.add(alert_ctx, id, ts, event_type, severity, gateway);
        }
    }
    for s in raised {
        let e = &s.event;
        outbox.add(
            alert_ctx,
            e.id,
            e.timestamp.to_datetime(),
            &e.event_type,
            e.severity,
            subject_gateway(s),
        );
    }
    if !outbox.ids.is_empty() {
        tx.execute(
            INSERT_SIEM_OUTBOX,
            &[&outbox.destinations, &outbox.ids, &outbox.ts],
        )
        .await?;
    }
    Ok(())
}

/// Outbox rows in the order given (ids increase with it).
const INSERT_SIEM_OUTBOX: &str = "INSERT INTO siem_outbox (destination, event_id, event_ts) \
     SELECT d, e, t FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) WITH ORDINALITY AS x(d, e, t, n) \
     ORDER BY n";

/// Column arrays of the SIEM outbox rows of one transaction.
#[derive(Default)]
struct SiemOutbox<'a> {
    destinations: Vec<&'a str>,
    ids: Vec<Uuid>,
    ts: Vec<DateTime<Utc>>,
}

impl<'a> SiemOutbox<'a> {
    fn add(
        &mut self,
        ctx: &'a AlertContext,
        id: Uuid,
        ts: DateTime<Utc>,
        event_type: &str,
        severity: Severity,
        gateway: Option<&str>,
    ) {
        for (name, filter) in &ctx.siem {
            if filter.matches(event_type, severity, gateway) {
                self.destinations.push(name);
                self.ids.push(id);
                self.ts.push(ts);
            }
        }
    }
}

const GAP_EXPLANATIONS: &str = "SELECT first_seq, last_seq, reason FROM chain_explanations \
     WHERE gateway_id = $1 AND last_seq >= $2 AND first_seq <= $3";

/// Gives the event `seq` of `gateway_id`, still pending after `gap_after`, status `gap`,
/// records the missing seqs and, unless the gateway explained them, a `security.violation`.
/// Returns the events this made (for the stream), or None if the event was no longer
/// waiting.
pub async fn declare_gap(
    conn: &mut Conn,
    gateway_id: &str,
    seq: i64,
    gap_after: std::time::Duration,
    collector_id: &str,
    alert_ctx: &AlertContext,
) -> Result<Option<Vec<Arc<Stored>>>, DbError> {
    let tx = conn.client.transaction().await?;
    tx.execute(LOCK_GATEWAY, &[&gateway_id]).await?;
    let waiting = tx
        .query_opt(
            "SELECT event_id FROM chain_links WHERE gateway_id = $1 AND seq = $2 \
             AND status = 'pending' AND received_at < now() - make_interval(secs => $3)",
            &[&gateway_id, &seq, &gap_after.as_secs_f64()],
        )
        .await?;
    let Some(waiting) = waiting else {
        return Ok(None);
    };
    let event_id: Uuid = waiting.get(0);
    let below: Option<i64> = tx
        .query_one(MAX_SEQ_BELOW, &[&gateway_id, &seq])
        .await?
        .get(0);
    let first = below.map_or(1, |b| b + 1);
    let last = seq - 1;
    let explanation: Option<String> = if below.is_none() {
        // Nothing of this gateway was ever received before: the collector came later.
        Some("first contact".into())
    } else {
        let known: Vec<chain::Explanation> = tx
            .query(GAP_EXPLANATIONS, &[&gateway_id, &first, &last])
            .await?
            .iter()
            .filter_map(|r| {
                Some(chain::Explanation {
                    first_seq: u64::try_from(r.get::<_, i64>(0)).ok()?,
                    last_seq: u64::try_from(r.get::<_, i64>(1)).ok()?,
                    reason: r.get(2),
                })
            })
            .collect();
        chain::explain(
            u64::try_from(first).unwrap_or(0),
            u64::try_from(last).unwrap_or(0),
            &known,
        )
        .map(|reasons| reasons.join(", "))
    };
    tx.execute(RESOLVE_LINKS, &[&gateway_id, &vec![seq], &vec!["gap"]])
        .await?;
    let mut rows = Rows::default();
    let violation_id = if explanation.is_none() {
        let missing = last - first + 1;
        let data = Map::from_iter([
            ("gateway_id".to_owned(), gateway_id.into()),
            ("first_seq".to_owned(), first.into()),
            ("last_seq".to_owned(), last.into()),
            ("missing".to_owned(), missing.into()),
            ("next_seq".to_owned(), seq.into()),
            ("event_id".to_owned(), event_id.to_string().into()),
        ]);
        let reason = format!(
            "{missing} event(s) of gateway `{gateway_id}` (seq {first} to {last}) never arrived and the gateway did not report them dropped"
        );
        let v = violation(collector_id, Some(gateway_id), "seq_gap", reason, data);
        let id = v.id;
        rows.push(&v, Verification::Local, false);
        Some(id)
    } else {
        None
    };
    let explained_by: Option<Uuid> = None;
    tx.execute(
        INSERT_GAP,
        &[
            &gateway_id,
            &first,
            &last,
            &seq,
            &explanation,
            &explained_by,
            &violation_id,
        ],
    )
    .await?;
    let mut new_events: Vec<Arc<Stored>> = Vec::new();
    if !rows.id.is_empty() {
        let inserted = insert_rows(&tx, INSERT_EVENTS, &rows).await?;
        new_events.extend(
            rows.stored
                .iter()
                .flatten()
                .filter(|s| inserted.contains(&s.event.id))
                .cloned(),
        );
        let raised = alerts::run(&tx, alert_ctx, &new_events).await?;
        write_siem_outbox(&tx, alert_ctx, &rows, &inserted, &raised).await?;
        new_events.extend(raised);
    }
    tx.commit().await?;
    Ok(Some(new_events))
}

/// Seq ranges an arriving agent event says are lost or set aside.
fn explained_ranges(e: &SecurityEvent) -> Vec<(u64, u64, String)> {
    let get = |k: &str| e.event_data.get(k).and_then(Value::as_u64);
    match e.event_type.as_str() {
        "agent.buffer_dropped" => match (get("first_seq"), get("last_seq")) {
            (Some(a), Some(b)) if a >= 1 && a <= b => vec![(a, b, e.event_type.clone())],
            _ => Vec::new(),
        },
        "forward.dead_lettered" => {
            let mut seqs: Vec<u64> = e
                .event_data
                .get("seqs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .filter(|s| *s >= 1)
                        .collect()
                })
                .unwrap_or_default();
            seqs.sort_unstable();
            seqs.dedup();
            let mut out: Vec<(u64, u64, String)> = Vec::new();
            for s in seqs {
                match out.last_mut() {
                    Some(last) if last.1 + 1 == s => last.1 = s,
                    _ => out.push((s, s, e.event_type.clone())),
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_lettered_seqs_become_contiguous_ranges() {
        let e = SecurityEvent::new("gw", EventType::ForwardDeadLettered)
            .data("seqs", vec![9, 3, 4, 5, 9, 11]);
        let got: Vec<(u64, u64)> = explained_ranges(&e)
            .into_iter()
            .map(|r| (r.0, r.1))
            .collect();
        assert_eq!(got, [(3, 5), (9, 9), (11, 11)]);
    }

    #[test]
    fn a_drop_report_explains_its_seq_range_and_nonsense_explains_nothing() {
        let e = SecurityEvent::new("gw", EventType::AgentBufferDropped)
            .data("first_seq", 10)
            .data("last_seq", 20);
        assert_eq!(
            explained_ranges(&e)[0].0..=explained_ranges(&e)[0].1,
            10..=20
        );
        let bad = SecurityEvent::new("gw", EventType::AgentBufferDropped)
            .data("first_seq", 20)
            .data("last_seq", 10);
        assert!(explained_ranges(&bad).is_empty());
    }
}
