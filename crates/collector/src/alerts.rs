//! Handlers: the original design's ingest handlers as burst rules, run inside the ingest
//! transaction over the events it really inserted.
//!
//! A rule counts the events of one type (optionally matching a JSON containment on
//! event_data) per group (user, source address, station, gateway, or everything) within a
//! window ending at the newest new event, across every gateway, in the database, so several
//! collectors sharing the load still see one count. When the count reaches the threshold an
//! `alert.raised` event is stored (correlated to its sources: their ids, count, window) with
//! a row in `alerts` for acknowledgement, and one webhook delivery per matching webhook is
//! written to the outbox. `alert_state` makes a rule fire once per window per group, even
//! with several collectors racing.
//!
//! An alert is the collector's own event, filed under the collector's id like every other
//! (`verification = local`): a gateway's rows are only what it sent. The gateway (and
//! station) it is about are `event_data.source_gateway` / `source_station`; grouping by
//! gateway or station uses the gateway an event is *about* ([`rows::subject_gateway`]: the
//! sender, or `source_gateway` of a collector report such as an integrity violation), so
//! the collector's reports on gateway A still group under A.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::chain::Verification;
use super::config::{AlertRule, GroupBy, SiemFilter, Webhook};
use super::db::DbError;
use super::rows::{
    self, about, local_event, stored_json, subject_gateway, subject_station, Stored,
};
use linesentry_event::{EventType, SecurityEvent};

/// What the handlers need inside an ingest transaction.
#[derive(Debug, Clone)]
pub struct AlertContext {
    pub collector_id: String,
    pub rules: Vec<AlertRule>,
    pub webhooks: Vec<Webhook>,
    /// `[[siem]]` destinations by name and what each exports: the ingest transaction
    /// writes their outbox rows.
    pub siem: Vec<(String, SiemFilter)>,
}

impl AlertContext {
    /// Does any rule count events of this type?
    pub fn watches(&self, event_type: &str) -> bool {
        self.rules.iter().any(|r| r.event_type == event_type)
    }
}

/// Most source ids listed in an alert.
const MAX_SOURCES: i32 = 50;

/// The group of `s` under `group_by`, or None if the event has no such field.
fn group_key(group_by: GroupBy, s: &Stored) -> Option<String> {
    let e = &s.event;
    match group_by {
        GroupBy::User => e.user_id.clone(),
        GroupBy::SourceIp => e.source_ip.map(|ip| ip.to_string()),
        GroupBy::Station => Some(format!("{}/{}", subject_gateway(s)?, subject_station(s)?)),
        GroupBy::Gateway => subject_gateway(s).map(str::to_owned),
        GroupBy::Everything => Some("*".into()),
    }
}

/// JSON containment, as PostgreSQL's `@>` for objects: every member of `want` is in `have`
/// (recursively for objects; arrays contain every wanted element).
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            w.iter().all(|wv| h.iter().any(|hv| contains(hv, wv)))
        }
        (h, w) => h == w,
    }
}

fn matches(rule: &AlertRule, e: &SecurityEvent) -> bool {
    e.event_type == rule.event_type
        && rule.matches.as_ref().is_none_or(|m| {
            contains(
                &Value::Object(e.event_data.clone()),
                &Value::Object(m.clone()),
            )
        })
}

/// The gateway a row is about, in SQL: as [`rows::subject_gateway`].
macro_rules! subject_gateway_sql {
    () => {
        "(CASE WHEN verification = 'local' THEN event_data->>'source_gateway' ELSE gateway_id END)"
    };
}

/// The station a row is about, in SQL: as [`rows::subject_station`].
macro_rules! subject_station_sql {
    () => {
        "(CASE WHEN verification = 'local' THEN event_data->>'source_station' ELSE station_id END)"
    };
}

/// Counts a group's events in the window: the count, the newest ids, and the gateways they
/// are about. The SQL differs only by the fixed group condition.
macro_rules! count_sql {
    ($group:expr) => {
        concat!(
            "SELECT count(*), (array_agg(id ORDER BY \"timestamp\" DESC))[1:$6], array_agg(DISTINCT ",
            subject_gateway_sql!(),
            ") FILTER (WHERE ",
            subject_gateway_sql!(),
            " IS NOT NULL) FROM security_events WHERE event_type = $1 AND \"timestamp\" > $2 \
             AND \"timestamp\" <= $3 AND ($4::jsonb IS NULL OR event_data @> $4) AND ",
            $group
        )
    };
}

fn count_sql(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::User => count_sql!("user_id = $5"),
        GroupBy::SourceIp => count_sql!("source_ip = $5::text::inet"),
        GroupBy::Station => count_sql!(concat!(
            subject_gateway_sql!(),
            " || '/' || ",
            subject_station_sql!(),
            " = $5"
        )),
        GroupBy::Gateway => count_sql!(concat!(subject_gateway_sql!(), " = $5")),
        GroupBy::Everything => count_sql!("$5::text IS NOT NULL"),
    }
}

/// Claims the right to fire: once per window per rule and group.
const CLAIM: &str =
    "INSERT INTO alert_state AS s (rule, group_key, last_raised_at) VALUES ($1, $2, $3) \
     ON CONFLICT (rule, group_key) DO UPDATE SET last_raised_at = EXCLUDED.last_raised_at \
     WHERE s.last_raised_at <= EXCLUDED.last_raised_at - make_interval(secs => $4) \
     RETURNING 1";

const INSERT_ALERT: &str =
    "INSERT INTO alerts (id, event_ts, rule, group_key, severity, source_count) \
     VALUES ($1, $2, $3, $4, $5, $6)";

const INSERT_OUTBOX: &str =
    "INSERT INTO webhook_outbox (webhook, alert_id, payload) VALUES ($1, $2, $3)";

/// Runs the rules over `new` (the events this transaction inserted); stores and returns the
/// alerts raised.
pub async fn run(
    tx: &Transaction<'_>,
    ctx: &AlertContext,
    new: &[Arc<Stored>],
) -> Result<Vec<Arc<Stored>>, DbError> {
    // (rule index, group) -> newest event time among the new events.
    let mut due: BTreeMap<(usize, String), DateTime<Utc>> = BTreeMap::new();
    for s in new {
        let e = &s.event;
        if e.event_type == "alert.raised" {
            continue;
        }
        for (i, rule) in ctx.rules.iter().enumerate() {
            if !matches(rule, e) {
                continue;
            }
            if let Some(key) = group_key(rule.group_by, s) {
                let t = e.timestamp.to_datetime();
                due.entry((i, key))
                    .and_modify(|old| *old = (*old).max(t))
                    .or_insert(t);
            }
        }
    }
    let mut raised = Vec::new();
    for ((i, key), at) in due {
        let rule = &ctx.rules[i];
        let window = chrono::Duration::from_std(rule.window).unwrap_or(chrono::Duration::zero());
        let data = rule.matches.clone().map(Value::Object);
        let row = tx
            .query_one(
                count_sql(rule.group_by),
                &[
                    &rule.event_type,
                    &(at - window),
                    &at,
                    &data,
                    &key,
                    &MAX_SOURCES,
                ],
            )
            .await?;
        let count: i64 = row.get(0);
        if count < i64::from(rule.threshold) {
            continue;
        }
        let claimed = tx
            .query_opt(CLAIM, &[&rule.name, &key, &at, &rule.window.as_secs_f64()])
            .await?
            .is_some();
        if !claimed {
            continue;
        }
        let sources: Vec<Uuid> = row.get::<_, Option<Vec<Uuid>>>(1).unwrap_or_default();
        let gateways: Vec<String> = row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        raised.push(raise(tx, ctx, rule, &key, count, at, &sources, &gateways).await?);
    }
    Ok(raised)
}

#[allow(clippy::too_many_arguments)]
async fn raise(
    tx: &Transaction<'_>,
    ctx: &AlertContext,
    rule: &AlertRule,
    key: &str,
    count: i64,
    at: DateTime<Utc>,
    sources: &[Uuid],
    gateways: &[String],
) -> Result<Arc<Stored>, DbError> {
    // Filed under the collector's id; the gateway and station it is about are event_data.
    let mut e = local_event(&ctx.collector_id, EventType::AlertRaised, rule.severity);
    e.correlation_id = Some(e.id);
    let mut data = Map::new();
    data.insert("rule".into(), rule.name.clone().into());
    data.insert("description".into(), rule.description.clone().into());
    data.insert("event_type".into(), rule.event_type.clone().into());
    data.insert("group_by".into(), rule.group_by.as_str().into());
    data.insert("group_key".into(), key.into());
    data.insert("count".into(), count.into());
    data.insert("threshold".into(), rule.threshold.into());
    data.insert("window_s".into(), rule.window.as_secs().into());
    data.insert("window_end".into(), at.to_rfc3339().into());
    data.insert("gateways".into(), json!(gateways));
    data.insert(
        "source_ids".into(),
        json!(sources.iter().map(Uuid::to_string).collect::<Vec<_>>()),
    );
    if let Some(m) = &rule.matches {
        data.insert("match".into(), Value::Object(m.clone()));
    }
    e.event_data = data;
    match rule.group_by {
        GroupBy::User => e.user_id = Some(key.to_owned()),
        GroupBy::SourceIp => e.source_ip = key.parse().ok(),
        GroupBy::Station => {
            if let Some((gw, station)) = key.split_once('/') {
                about(&mut e, gw, Some(station));
            }
        }
        GroupBy::Gateway => about(&mut e, key, None),
        GroupBy::Everything => {}
    }
    // Sources all about one gateway: the alert is about it too, whatever the grouping.
    if let [only] = gateways {
        if !e.event_data.contains_key(rows::SOURCE_GATEWAY) {
            about(&mut e, only, None);
        }
    }
    let stored = Arc::new(Stored {
        event: e,
        verification: Verification::Local,
    });
    rows::insert_local(tx, &stored).await?;
    let e = &stored.event;
    let source_count = i32::try_from(count).unwrap_or(i32::MAX);
    tx.execute(
        INSERT_ALERT,
        &[
            &e.id,
            &e.timestamp.to_datetime(),
            &rule.name,
            &key,
            &rule.severity.as_str(),
            &source_count,
        ],
    )
    .await?;
    for hook in &ctx.webhooks {
        let wanted = rule.severity >= hook.min_severity
            && (hook.rules.is_empty() || hook.rules.contains(&rule.name));
        if wanted {
            let payload = json!({
                "type": "alert.raised",
                "alert": {
                    "id": e.id.to_string(),
                    "rule": rule.name,
                    "description": rule.description,
                    "severity": rule.severity.as_str(),
                    "group_by": rule.group_by.as_str(),
                    "group_key": key,
                    "count": count,
                },
                "event": stored_json(&stored),
            });
            tx.execute(INSERT_OUTBOX, &[&hook.name, &e.id, &payload])
                .await?;
        }
    }
    tracing::warn!(rule = %rule.name, group = %key, count, severity = %rule.severity, "alert raised");
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::Severity;

    #[test]
    fn containment_follows_postgres_for_objects_and_arrays() {
        let have = json!({"result": "fail", "limit": {"min": 1, "max": 2}, "tags": ["a", "b"]});
        assert!(contains(&have, &json!({"result": "fail"})));
        assert!(contains(&have, &json!({"limit": {"max": 2}})));
        assert!(contains(&have, &json!({"tags": ["b"]})));
        assert!(!contains(&have, &json!({"result": "pass"})));
        assert!(!contains(&have, &json!({"missing": null})));
    }

    #[test]
    fn groups_come_from_the_event_and_stations_are_per_gateway() {
        let mut e = SecurityEvent::new("gw-1", EventType::AuthFailed).station("hmi");
        e.user_id = Some("bob".into());
        let s = Stored {
            event: e,
            verification: Verification::Verified,
        };
        assert_eq!(group_key(GroupBy::User, &s).as_deref(), Some("bob"));
        assert_eq!(group_key(GroupBy::SourceIp, &s), None);
        assert_eq!(group_key(GroupBy::Station, &s).as_deref(), Some("gw-1/hmi"));
        assert_eq!(group_key(GroupBy::Everything, &s).as_deref(), Some("*"));
    }

    #[test]
    fn the_collectors_reports_group_under_the_gateway_they_are_about_not_the_collector() {
        let mut e = local_event("collector-1", EventType::SecurityViolation, Severity::Error);
        let unattached = Stored {
            event: e.clone(),
            verification: Verification::Local,
        };
        assert_eq!(group_key(GroupBy::Gateway, &unattached), None);
        about(&mut e, "gw-a", Some("press-1"));
        let s = Stored {
            event: e,
            verification: Verification::Local,
        };
        assert_eq!(s.event.gateway_id, "collector-1");
        assert_eq!(group_key(GroupBy::Gateway, &s).as_deref(), Some("gw-a"));
        assert_eq!(
            group_key(GroupBy::Station, &s).as_deref(),
            Some("gw-a/press-1")
        );
    }

    #[test]
    fn every_group_query_counts_by_the_gateway_a_row_is_about() {
        for g in [GroupBy::Station, GroupBy::Gateway] {
            assert!(
                count_sql(g).contains("event_data->>'source_gateway'"),
                "{}",
                count_sql(g)
            );
        }
        assert!(count_sql(GroupBy::Station).contains("event_data->>'source_station'"));
    }
}
