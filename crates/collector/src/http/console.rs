//! The console's read API (viewer): the asset inventory and its history, the timeline from
//! the minute / hour / day rollups, an event's chain verdict, and the ATT&CK for ICS
//! coverage. Every value a caller sends is validated and bound as a parameter; every answer
//! is bounded.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ApiError, AppState, Auth};
use crate::assets;
use crate::auth::Role;
use crate::describe::{TACTICS, TECHNIQUES};
use linesentry_event::integrity::hex;
use linesentry_event::{EventType, Severity};

type Pairs = Query<Vec<(String, String)>>;

/// Most assets one answer lists.
pub(crate) const MAX_ASSETS: i64 = 5000;
/// Most history rows one answer lists.
pub(crate) const MAX_HISTORY: i64 = 1000;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn db(e: &impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

fn text_param(name: &str, v: &str) -> Result<String, ApiError> {
    if v.is_empty() || v.len() > 256 || v.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "`{name}`: expected 1 to 256 characters"
        )));
    }
    Ok(v.to_owned())
}

fn limit_param(v: &str, max: i64) -> Result<i64, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad_request(format!("`limit`: expected 1 to {max}")))
}

/// `GET /api/v1/assets?gateway_id=&limit=`: the inventory, by gateway and station.
pub(super) async fn assets(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    auth.require(Role::Viewer)?;
    let mut gateway: Option<String> = None;
    let mut limit: i64 = 1000;
    for (k, v) in &pairs {
        match k.as_str() {
            "gateway_id" => gateway = Some(text_param(k, v)?),
            "limit" => limit = limit_param(v, MAX_ASSETS)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected gateway_id, limit"
                )))
            }
        }
    }
    let conn = st.pool.get().await.map_err(|e| db(&e))?;
    // PostgreSQL builds the JSON: 500 rows decoded and re-encoded field by field cost more
    // than the query itself.
    let row = conn
        .client
        .query_one(ASSETS_JSON, &[&gateway, &limit])
        .await
        .map_err(|e| db(&e))?;
    let (list, count, more): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
    let body = format!(r#"{{"assets":{list},"count":{count},"truncated":{more}}}"#);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The inventory as one JSON array (`$1` gateway or null, `$2` limit), its length, and
/// whether more assets exist, with the open alerts per station.
const ASSETS_JSON: &str = r#"
WITH page AS (
    SELECT * FROM assets WHERE ($1::text IS NULL OR gateway_id = $1)
    ORDER BY gateway_id, station_id LIMIT $2::int8 + 1
), shown AS (
    SELECT * FROM page ORDER BY gateway_id, station_id LIMIT $2::int8
), open AS (
    -- Driven from the open alerts (their partial index, at most 10,000), each looked up by
    -- the events' primary key: never a scan of the events.
    SELECT e.event_data->>'source_gateway' AS g, e.event_data->>'source_station' AS s,
           count(*) AS n
    FROM (SELECT id, event_ts FROM alerts WHERE status = 'open'
          ORDER BY raised_at DESC LIMIT 10000) al
    CROSS JOIN LATERAL (SELECT event_data FROM security_events x
          WHERE x.id = al.id AND x."timestamp" = al.event_ts LIMIT 1) e
    WHERE e.event_data ? 'source_station' GROUP BY 1, 2
)
SELECT coalesce(json_agg(json_build_object(
           'gateway_id', a.gateway_id, 'station_id', a.station_id, 'protocol', a.protocol,
           'address', a.address, 'vendor', a.vendor, 'product', a.product,
           'product_name', a.product_name, 'firmware', a.firmware,
           'program_checksum', a.program_checksum, 'application_uri', a.application_uri,
           'certificate_thumbprint', a.certificate_thumbprint,
           'security_policy', a.security_policy, 'status', a.status, 'mode', a.mode,
           'reachable', a.reachable,
           'first_seen', to_char(a.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'last_seen', to_char(a.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'events', a.events, 'changed_fields', a.changed_fields,
           'last_change_at', to_char(a.last_change_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'open_alerts', coalesce(o.n, 0)
       ) ORDER BY a.gateway_id, a.station_id), '[]')::text,
       count(a.*),
       (SELECT count(*) FROM page) > $2::int8
FROM shown a LEFT JOIN open o ON o.g = a.gateway_id AND o.s = a.station_id
"#;

/// `GET /api/v1/assets/{gateway}/{station}/history?limit=`: newest first.
pub(super) async fn asset_history(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((gateway, station)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let gateway = text_param("gateway", &gateway)?;
    let station = text_param("station", &station)?;
    let mut limit = 200;
    for (k, v) in &pairs {
        match k.as_str() {
            "limit" => limit = limit_param(v, MAX_HISTORY)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected limit"
                )))
            }
        }
    }
    let conn = st.pool.get().await.map_err(|e| db(&e))?;
    let known = conn
        .client
        .query_opt(
            "SELECT 1 FROM assets WHERE gateway_id = $1 AND station_id = $2",
            &[&gateway, &station],
        )
        .await
        .map_err(|e| db(&e))?;
    if known.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such asset",
        ));
    }
    let rows = conn
        .client
        .query(
            "SELECT at, field, value, previous, event_id, event_type FROM asset_history \
             WHERE gateway_id = $1 AND station_id = $2 ORDER BY at DESC, id DESC LIMIT $3",
            &[&gateway, &station, &limit],
        )
        .await
        .map_err(|e| db(&e))?;
    let history: Vec<Value> = rows
        .iter()
        .map(|r| {
            let field: String = r.get(1);
            json!({
                "at": iso(r.get(0)),
                "watched": assets::WATCHED.contains(&field.as_str()),
                "field": field,
                "value": r.get::<_, Option<String>>(2),
                "previous": r.get::<_, Option<String>>(3),
                "event_id": r.get::<_, Uuid>(4).to_string(),
                "event_type": r.get::<_, String>(5),
            })
        })
        .collect();
    Ok(Json(json!({
        "gateway_id": gateway,
        "station_id": station,
        "history": history,
        "count": history.len(),
    })))
}

/// A timeline window: which rollup, the bar width, the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeline {
    pub(crate) granularity: &'static str,
    pub(crate) step: ChronoDuration,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

/// The named periods of the timeline.
pub(crate) const TIMELINE_PERIODS: &str = "1h, 6h, 24h, 7d, 30d";

impl Timeline {
    /// The window of `period` at `now`: whole bars, the last one holding `now`.
    pub(crate) fn of(period: &str, now: DateTime<Utc>) -> Option<Self> {
        let (granularity, step, bars) = match period {
            "1h" => ("minute", ChronoDuration::minutes(1), 60),
            "6h" => ("minute", ChronoDuration::minutes(5), 72),
            "24h" => ("hour", ChronoDuration::hours(1), 24),
            "7d" => ("hour", ChronoDuration::hours(6), 28),
            "30d" => ("day", ChronoDuration::days(1), 30),
            _ => return None,
        };
        let to = now.duration_trunc(step).ok()? + step;
        Some(Self {
            granularity,
            step,
            from: to - step * bars,
            to,
        })
    }

    /// The number of bars.
    pub(crate) fn bars(&self) -> usize {
        let n = (self.to - self.from).num_seconds() / self.step.num_seconds().max(1);
        usize::try_from(n).unwrap_or(0)
    }
}

const TIMELINE_SQL: &str = "SELECT date_bin(make_interval(secs => $2), bucket, $3) AS b, \
     severity, sum(count)::int8 FROM event_metrics \
     WHERE granularity = $1 AND bucket >= $3 AND bucket < $4 \
     AND ($5::text IS NULL OR gateway_id = $5) AND severity = ANY($6::text[]) \
     GROUP BY 1, 2 ORDER BY 1, 2";

/// `GET /api/v1/timeline?period=&gateway_id=&min_severity=`: events per bar and severity
/// from the rollups, every bar of the window present (zeros included).
pub(super) async fn timeline(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let mut period = "1h".to_owned();
    let mut gateway: Option<String> = None;
    let mut min = Severity::Debug;
    for (k, v) in &pairs {
        match k.as_str() {
            "period" => period.clone_from(v),
            "gateway_id" => gateway = Some(text_param(k, v)?),
            "min_severity" => {
                min = v
                    .parse()
                    .map_err(|e| ApiError::bad_request(format!("`min_severity`: {e}")))?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected period, gateway_id, min_severity"
                )))
            }
        }
    }
    let w = Timeline::of(&period, Utc::now()).ok_or_else(|| {
        ApiError::bad_request(format!("`period`: expected one of {TIMELINE_PERIODS}"))
    })?;
    let levels: Vec<&str> = Severity::ALL
        .iter()
        .filter(|s| **s >= min)
        .map(|s| s.as_str())
        .collect();
    let conn = st.pool.get().await.map_err(|e| db(&e))?;
    #[allow(clippy::cast_precision_loss)] // whole seconds of at most a day
    let step_s = w.step.num_seconds() as f64;
    let rows = conn
        .client
        .query(
            TIMELINE_SQL,
            &[&w.granularity, &step_s, &w.from, &w.to, &gateway, &levels],
        )
        .await
        .map_err(|e| db(&e))?;
    let mut counts: BTreeMap<DateTime<Utc>, BTreeMap<String, i64>> = BTreeMap::new();
    for r in &rows {
        let (b, s, n): (DateTime<Utc>, String, i64) = (r.get(0), r.get(1), r.get(2));
        *counts.entry(b).or_default().entry(s).or_default() += n;
    }
    let mut total = 0;
    let buckets: Vec<Value> = (0..w.bars())
        .map(|i| {
            let start = w.from + w.step * i32::try_from(i).unwrap_or(0);
            let by = counts.remove(&start).unwrap_or_default();
            let sum: i64 = by.values().sum();
            total += sum;
            json!({
                "start": iso(start),
                "end": iso(start + w.step),
                "total": sum,
                "by_severity": by,
            })
        })
        .collect();
    Ok(Json(json!({
        "period": period,
        "granularity": w.granularity,
        "step_s": w.step.num_seconds(),
        "from": iso(w.from),
        "to": iso(w.to),
        "gateway_id": gateway,
        "min_severity": min.as_str(),
        "total": total,
        "buckets": buckets,
    })))
}

/// `GET /api/v1/events/{id}/chain`: the collector's verdict on the event's link: its seq and
/// prev_hash, the stored link and the predecessor's hash, and whether they match.
pub(super) async fn chain(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("event id: expected a UUID"))?;
    let conn = st.pool.get().await.map_err(|e| db(&e))?;
    let ev = conn
        .client
        .query_opt(
            "SELECT gateway_id, seq, prev_hash, verification FROM security_events \
             WHERE id = $1 LIMIT 1",
            &[&id],
        )
        .await
        .map_err(|e| db(&e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such event"))?;
    let (gateway, seq, prev_hash, verification): (String, Option<i64>, Option<String>, String) =
        (ev.get(0), ev.get(1), ev.get(2), ev.get(3));
    let mut out = json!({
        "event_id": id.to_string(),
        "gateway_id": gateway,
        "seq": seq,
        "prev_hash": prev_hash,
        "verification": verification,
        "link": null,
        "predecessor": null,
    });
    let Some(seq) = seq else {
        out["explanation"] = "made by the collector: no chain".into();
        return Ok(Json(out));
    };
    let links = conn
        .client
        .query(
            "SELECT seq, hash, status, event_id, received_at FROM chain_links \
             WHERE gateway_id = $1 AND seq IN ($2::int8, $2::int8 - 1)",
            &[&gateway, &seq],
        )
        .await
        .map_err(|e| db(&e))?;
    for r in &links {
        let s: i64 = r.get(0);
        let link = json!({
            "seq": s,
            "hash": hex(r.get::<_, &[u8]>(1)),
            "status": r.get::<_, String>(2),
            "event_id": r.get::<_, Uuid>(3).to_string(),
            "received_at": iso(r.get(4)),
        });
        if s == seq {
            out["link"] = link;
        } else {
            out["predecessor"] = link;
        }
    }
    let predecessor_hash = out["predecessor"]["hash"].as_str().map(str::to_owned);
    out["matches_predecessor"] = match (&predecessor_hash, &prev_hash) {
        (Some(h), Some(p)) => Value::Bool(h.eq_ignore_ascii_case(p)),
        _ => Value::Null,
    };
    out["explanation"] = match verification.as_str() {
        "verified" if seq == 1 => "the first event of the chain".into(),
        "verified" => format!("prev_hash is the hash of seq {}", seq - 1).into(),
        "pending" => format!("seq {} has not arrived yet", seq - 1).into(),
        "broken" => format!(
            "prev_hash differs from the hash of seq {}, or seq {seq} was reused with other content",
            seq - 1
        )
        .into(),
        "gap" => format!("seq {} never arrived, or the chain restarted here", seq - 1).into(),
        _ => Value::Null,
    };
    Ok(Json(out))
}

/// `GET /api/v1/attack?period=1h|24h|7d|30d`: the ATT&CK for ICS techniques the catalogue
/// covers, by tactic, with the event types that map to each and their counts in the period
/// (from the rollups).
pub(super) async fn attack(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let (window, gateway) =
        crate::query::stats_window(&pairs, Utc::now()).map_err(ApiError::bad_request)?;
    let conn = st.pool.get().await.map_err(|e| db(&e))?;
    let rows = conn
        .client
        .query(
            "SELECT event_type, sum(count)::int8 FROM event_metrics \
             WHERE granularity = $1 AND bucket >= $2 AND bucket < $3 \
             AND ($4::text IS NULL OR gateway_id = $4) GROUP BY 1",
            &[&window.granularity, &window.from, &window.to, &gateway],
        )
        .await
        .map_err(|e| db(&e))?;
    let by_type: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let techniques: Vec<Value> = TECHNIQUES
        .iter()
        .map(|t| {
            let types: Vec<&str> = EventType::ALL
                .iter()
                .filter(|e| e.entry().is_some_and(|c| c.attack.contains(&t.id)))
                .map(|e| e.as_str())
                .collect();
            let count: i64 = types.iter().filter_map(|e| by_type.get(*e)).sum();
            json!({
                "id": t.id,
                "name": t.name,
                "url": t.url(),
                "tactics": t.tactics,
                "event_types": types,
                "count": count,
            })
        })
        .collect();
    Ok(Json(json!({
        "from": iso(window.from),
        "to": iso(window.to),
        "tactics": TACTICS,
        "techniques": techniques,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_windows_are_whole_bars_ending_with_the_current_one() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T10:17:30Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let w = Timeline::of("1h", now).unwrap();
        assert_eq!((w.granularity, w.bars()), ("minute", 60));
        assert_eq!(iso(w.to), "2026-12-07T10:18:00.000Z");
        let w = Timeline::of("6h", now).unwrap();
        assert_eq!((w.step.num_seconds(), w.bars()), (300, 72));
        assert_eq!(iso(w.to), "2026-12-07T10:20:00.000Z");
        let w = Timeline::of("7d", now).unwrap();
        assert_eq!((w.granularity, w.bars()), ("hour", 28));
        assert_eq!(Timeline::of("1 hour; DROP", now), None);
    }
}
