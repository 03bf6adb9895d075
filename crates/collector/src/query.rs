//! Event queries and stats: query-string parameters in, validated filters and parameterised
//! SQL out. Pure; the API runs the SQL.
//!
//! Every value a caller sends is validated and bound as a parameter. The SQL text is built
//! only from fixed fragments chosen by which filters are present, never from input. The
//! original design interpolated the stats period into SQL; here a period is one of a fixed
//! set and its bounds are bound as timestamps.

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::chain::Verification;
use linesentry_event::Severity;

/// Largest page.
pub const MAX_LIMIT: i64 = 1000;
pub const DEFAULT_LIMIT: i64 = 100;
/// Deepest offset; deeper pages use the keyset cursor (`after`).
pub const MAX_OFFSET: i64 = 10_000;
const MAX_TEXT: usize = 256;
/// Most entries of `event_types`.
pub const MAX_TYPES: usize = 32;

/// A bound parameter.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// The original design's `getEvents` filters plus the collector's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub event_type: Option<String>,
    /// Types starting with this (`auth.`).
    pub event_type_prefix: Option<String>,
    /// Any of these types (`event_types=a.b,c.` : a name, or a prefix ending in `.`), as
    /// the stream's filter takes them; at most [`MAX_TYPES`].
    pub event_types: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub severity: Option<Severity>,
    pub min_severity: Option<Severity>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub gateway_id: Option<String>,
    pub station_id: Option<String>,
    pub correlation_id: Option<Uuid>,
    /// JSON containment on event_data.
    pub data: Option<Map<String, Value>>,
    pub verification: Option<Verification>,
    pub limit: i64,
    pub offset: i64,
    /// Keyset cursor: the (timestamp, id) of the last row of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

fn text(name: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > MAX_TEXT || value.contains('\0') {
        return Err(format!("`{name}`: expected 1 to {MAX_TEXT} characters"));
    }
    Ok(value.to_owned())
}

fn time(name: &str, value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{name}`: expected an RFC 3339 time such as 2026-11-27T08:00:00Z"))
}

fn number(name: &str, value: &str, max: i64) -> Result<i64, String> {
    match value.parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{name}`: expected a whole number from 0 to {max}")),
    }
}

/// The cursor of a row: `{timestamp micros}_{id}`, base64url.
pub fn cursor(ts: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}_{id}", ts.timestamp_micros()))
}

fn parse_cursor(value: &str) -> Result<(DateTime<Utc>, Uuid), String> {
    let bad = || "`after`: not a cursor this API returned".to_owned();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = text.split_once('_').ok_or_else(bad)?;
    let ts = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((ts, id.parse().map_err(|_| bad())?))
}

impl EventFilter {
    /// Parses query-string pairs; unknown or repeated parameters are errors.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut f = Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs {
            if !seen.insert(k.as_str()) {
                return Err(format!("`{k}` given twice"));
            }
            match k.as_str() {
                "event_type" => f.event_type = Some(text(k, v)?),
                "event_type_prefix" => f.event_type_prefix = Some(text(k, v)?),
                "event_types" => {
                    let list: Vec<String> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| text(k, t))
                        .collect::<Result<_, _>>()?;
                    if list.is_empty() || list.len() > MAX_TYPES {
                        return Err(format!(
                            "`event_types`: expected 1 to {MAX_TYPES} comma-separated types or prefixes ending in `.`"
                        ));
                    }
                    f.event_types = Some(list);
                }
                "user_id" => f.user_id = Some(text(k, v)?),
                "severity" => f.severity = Some(v.parse().map_err(|e: linesentry_event::UnknownSeverity| format!("`severity`: {e}"))?),
                "min_severity" => {
                    f.min_severity = Some(v.parse().map_err(|e: linesentry_event::UnknownSeverity| format!("`min_severity`: {e}"))?);
                }
                "start" => f.start = Some(time(k, v)?),
                "end" => f.end = Some(time(k, v)?),
                "gateway_id" => f.gateway_id = Some(text(k, v)?),
                "station_id" => f.station_id = Some(text(k, v)?),
                "correlation_id" => {
                    f.correlation_id = Some(v.parse().map_err(|_| "`correlation_id`: expected a UUID".to_owned())?);
                }
                "data" => match serde_json::from_str::<Value>(v) {
                    Ok(Value::Object(m)) if v.len() <= 4096 => f.data = Some(m),
                    _ => {
                        return Err(
                            "`data`: expected a JSON object of at most 4096 bytes, such as {\"tag\":\"die_temp_sp\"}".into(),
                        )
                    }
                },
                "verification" => f.verification = Some(v.parse().map_err(|e| format!("`verification`: {e}"))?),
                "limit" => {
                    f.limit = number(k, v, MAX_LIMIT)?;
                    if f.limit == 0 {
                        return Err(format!("`limit`: expected 1 to {MAX_LIMIT}"));
                    }
                }
                "offset" => f.offset = number(k, v, MAX_OFFSET).map_err(|e| format!("{e}; use `after` for deeper pages"))?,
                "after" => f.after = Some(parse_cursor(v)?),
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; expected event_type, event_type_prefix, event_types, user_id, severity, min_severity, start, end, gateway_id, station_id, correlation_id, data, verification, limit, offset, after"
                    ))
                }
            }
        }
        if let (Some(s), Some(e)) = (f.start, f.end) {
            if s >= e {
                return Err("`start` must be before `end`".into());
            }
        }
        if f.after.is_some() && f.offset > 0 {
            return Err("`after` and `offset` together; a cursor replaces the offset".into());
        }
        Ok(f)
    }

    /// The SQL and its parameters: rows newest first, one more than `limit` (to know whether
    /// another page follows).
    pub fn sql(&self) -> (String, Vec<Param>) {
        let mut sql = String::from(
            "SELECT id, event_type, event_data, context, \"timestamp\", correlation_id, user_id, \
             source_ip, severity, gateway_id, station_id, seq, prev_hash, verification, created_at \
             FROM security_events WHERE true",
        );
        let mut params: Vec<Param> = Vec::new();
        let mut add = |sql: &mut String, fragment: &str, p: Param| {
            params.push(p);
            // Fragments are fixed text; `{}` is the parameter's number.
            let _ = write!(
                sql,
                " AND {}",
                fragment.replace("{}", &format!("${}", params.len()))
            );
        };
        if let Some(v) = &self.event_type {
            add(&mut sql, "event_type = {}", Box::new(v.clone()));
        }
        if let Some(v) = &self.event_type_prefix {
            add(&mut sql, "starts_with(event_type, {})", Box::new(v.clone()));
        }
        if let Some(list) = &self.event_types {
            let (prefixes, names): (Vec<String>, Vec<String>) =
                list.iter().cloned().partition(|t| t.ends_with('.'));
            if prefixes.is_empty() {
                // Names only: `= ANY` lets the planner use the type index (a rare type among
                // a million events is found at once).
                add(&mut sql, "event_type = ANY({}::text[])", Box::new(names));
            } else {
                // A name matches itself; an entry ending in `.` is a prefix.
                add(
                    &mut sql,
                    "EXISTS (SELECT 1 FROM unnest({}::text[]) AS p(x) WHERE event_type = p.x \
                     OR (right(p.x, 1) = '.' AND starts_with(event_type, p.x)))",
                    Box::new(list.clone()),
                );
            }
        }
        if let Some(v) = &self.user_id {
            add(&mut sql, "user_id = {}", Box::new(v.clone()));
        }
        if let Some(v) = self.severity {
            add(&mut sql, "severity = {}", Box::new(v.as_str().to_owned()));
        }
        if let Some(min) = self.min_severity {
            let levels: Vec<String> = Severity::ALL
                .iter()
                .filter(|s| **s >= min)
                .map(|s| s.as_str().to_owned())
                .collect();
            add(&mut sql, "severity = ANY({}::text[])", Box::new(levels));
        }
        if let Some(v) = self.start {
            add(&mut sql, "\"timestamp\" >= {}", Box::new(v));
        }
        if let Some(v) = self.end {
            add(&mut sql, "\"timestamp\" < {}", Box::new(v));
        }
        if let Some(v) = &self.gateway_id {
            add(&mut sql, "gateway_id = {}", Box::new(v.clone()));
        }
        if let Some(v) = &self.station_id {
            add(&mut sql, "station_id = {}", Box::new(v.clone()));
        }
        if let Some(v) = self.correlation_id {
            add(&mut sql, "correlation_id = {}", Box::new(v));
        }
        if let Some(v) = &self.data {
            add(
                &mut sql,
                "event_data @> {}::jsonb",
                Box::new(Value::Object(v.clone())),
            );
        }
        if let Some(v) = self.verification {
            add(
                &mut sql,
                "verification = {}",
                Box::new(v.as_str().to_owned()),
            );
        }
        if let Some((ts, id)) = self.after {
            params.push(Box::new(ts));
            params.push(Box::new(id));
            let n = params.len();
            let _ = write!(sql, " AND (\"timestamp\", id) < (${}, ${n})", n - 1);
        }
        params.push(Box::new(self.limit + 1));
        params.push(Box::new(self.offset));
        let n = params.len();
        let _ = write!(
            sql,
            " ORDER BY \"timestamp\" DESC, id DESC LIMIT ${} OFFSET ${n}",
            n - 1
        );
        (sql, params)
    }
}

/// A stats window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsWindow {
    pub granularity: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The named periods of `getEventStats`.
pub const PERIODS: &str = "1h, 24h, 7d, 30d";

/// Parses `period` (one of [`PERIODS`]) or `start`/`end`, at `now`. Windows are whole
/// buckets: hours up to two days, days beyond; a named period ends with the current bucket.
pub fn stats_window(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(StatsWindow, Option<String>), String> {
    let mut period = None;
    let mut start = None;
    let mut end = None;
    let mut gateway = None;
    for (k, v) in pairs {
        match k.as_str() {
            "period" => period = Some(v.as_str()),
            "start" => start = Some(time(k, v)?),
            "end" => end = Some(time(k, v)?),
            "gateway_id" => gateway = Some(text(k, v)?),
            other => {
                return Err(format!(
                    "unknown parameter `{other}`; expected period, start, end, gateway_id"
                ))
            }
        }
    }
    let hour = ChronoDuration::hours(1);
    let day = ChronoDuration::days(1);
    let trunc = |t: DateTime<Utc>, d: ChronoDuration| t.duration_trunc(d).unwrap_or(t);
    let window = match (period, start, end) {
        (Some(p), None, None) => {
            let (granularity, bucket, n) = match p {
                "1h" => ("hour", hour, 1),
                "24h" => ("hour", hour, 24),
                "7d" => ("day", day, 7),
                "30d" => ("day", day, 30),
                _ => return Err(format!("`period`: expected one of {PERIODS}")),
            };
            let to = trunc(now, bucket) + bucket;
            StatsWindow {
                granularity,
                from: to - bucket * n,
                to,
            }
        }
        (None, Some(s), Some(e)) if s < e => {
            if e - s > ChronoDuration::days(400) {
                return Err("`start` to `end`: at most 400 days".into());
            }
            let (granularity, bucket) = if e - s <= ChronoDuration::days(2) {
                ("hour", hour)
            } else {
                ("day", day)
            };
            let to = trunc(e, bucket);
            let to = if to < e { to + bucket } else { to };
            StatsWindow {
                granularity,
                from: trunc(s, bucket),
                to,
            }
        }
        (None, None, None) => {
            return stats_window(&[("period".into(), "24h".into())], now).map(|(w, _)| (w, gateway))
        }
        _ => {
            return Err(format!(
                "expected `period` ({PERIODS}) or both `start` and `end` (start before end)"
            ))
        }
    };
    Ok((window, gateway))
}

/// The stats query over the rollups: counts per type and severity in `window`.
pub const STATS_SQL: &str = "SELECT event_type, severity, sum(count)::int8 FROM event_metrics \
     WHERE granularity = $1 AND bucket >= $2 AND bucket < $3 \
     AND ($4::text IS NULL OR gateway_id = $4) \
     GROUP BY 1, 2 ORDER BY 1, 2";

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn input_never_reaches_the_sql_text() {
        let nasty = "x' OR '1'='1'; DROP TABLE security_events; --";
        let f = EventFilter::parse(&pairs(&[
            ("event_type", nasty),
            ("event_type_prefix", nasty),
            ("user_id", nasty),
            ("gateway_id", nasty),
            ("station_id", nasty),
            ("data", r#"{"tag": "x' OR 1=1 --"}"#),
        ]))
        .unwrap();
        let (sql, params) = f.sql();
        assert!(!sql.contains("DROP") && !sql.contains("OR 1=1"), "{sql}");
        assert_eq!(params.len(), 8);
        assert!(
            sql.contains("event_type = $1") && sql.contains("event_data @> $6::jsonb"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $7 OFFSET $8"), "{sql}");
    }

    #[test]
    fn bad_values_huge_limits_and_unknown_parameters_are_refused_with_the_reason() {
        let err = |items: &[(&str, &str)]| EventFilter::parse(&pairs(items)).unwrap_err();
        assert!(err(&[("limit", "1000000")]).contains("limit"));
        assert!(err(&[("limit", "0")]).contains("limit"));
        assert!(err(&[("limit", "-1")]).contains("limit"));
        assert!(err(&[("offset", "999999")]).contains("after"));
        assert!(err(&[("severity", "fatal")]).contains("fatal"));
        assert!(err(&[("start", "yesterday")]).contains("RFC 3339"));
        assert!(err(&[("correlation_id", "1; DROP")]).contains("UUID"));
        assert!(err(&[("data", "[1,2]")]).contains("JSON object"));
        assert!(err(&[("after", "garbage!")]).contains("cursor"));
        assert!(err(&[("limit", "1"), ("limit", "2")]).contains("twice"));
        assert!(err(&[("sort", "id; DROP")]).contains("unknown parameter `sort`"));
        assert!(err(&[
            ("start", "2026-01-02T00:00:00Z"),
            ("end", "2026-01-01T00:00:00Z")
        ])
        .contains("before"));
    }

    #[test]
    fn a_cursor_round_trips_and_pages_by_keyset() {
        let ts = DateTime::from_timestamp_micros(1_764_243_000_123_456).unwrap();
        let id = Uuid::now_v7();
        let f = EventFilter::parse(&pairs(&[("after", &cursor(ts, id))])).unwrap();
        assert_eq!(f.after, Some((ts, id)));
        let (sql, _) = f.sql();
        assert!(sql.contains("(\"timestamp\", id) < ($1, $2)"), "{sql}");
    }

    #[test]
    fn event_types_are_one_bound_list_of_names_and_prefixes() {
        let names = EventFilter::parse(&pairs(&[("event_types", "a.b,c.d")])).unwrap();
        assert!(names.sql().0.contains("event_type = ANY($1::text[])"));
        let f = EventFilter::parse(&pairs(&[("event_types", "auth., setpoint.changed")])).unwrap();
        assert_eq!(
            f.event_types,
            Some(vec!["auth.".to_owned(), "setpoint.changed".to_owned()])
        );
        let (sql, params) = f.sql();
        assert!(sql.contains("unnest($1::text[])"), "{sql}");
        assert_eq!(params.len(), 3);
        let many = vec!["a"; MAX_TYPES + 1].join(",");
        assert!(EventFilter::parse(&pairs(&[("event_types", &many)]))
            .unwrap_err()
            .contains("event_types"));
        assert!(EventFilter::parse(&pairs(&[("event_types", " , ")])).is_err());
    }

    #[test]
    fn min_severity_means_that_level_and_above() {
        let f = EventFilter::parse(&pairs(&[("min_severity", "error")])).unwrap();
        let (sql, _) = f.sql();
        assert!(sql.contains("severity = ANY($1::text[])"));
    }

    #[test]
    fn stats_periods_are_a_fixed_set_of_whole_buckets() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:17:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (w, gw) =
            stats_window(&pairs(&[("period", "24h"), ("gateway_id", "gw-1")]), now).unwrap();
        assert_eq!(w.granularity, "hour");
        assert_eq!(w.to.to_rfc3339(), "2026-11-27T11:00:00+00:00");
        assert_eq!(w.from.to_rfc3339(), "2026-11-26T11:00:00+00:00");
        assert_eq!(gw.as_deref(), Some("gw-1"));
        let (w, _) = stats_window(&pairs(&[("period", "7d")]), now).unwrap();
        assert_eq!(
            (w.granularity, w.from.to_rfc3339().as_str()),
            ("day", "2026-11-21T00:00:00+00:00")
        );
        assert!(
            stats_window(&pairs(&[("period", "24 hours'; DROP TABLE x; --")]), now)
                .unwrap_err()
                .contains("1h, 24h, 7d, 30d")
        );
        let (w, _) = stats_window(
            &pairs(&[
                ("start", "2026-11-27T08:30:00Z"),
                ("end", "2026-11-27T09:10:00Z"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            (w.from.to_rfc3339(), w.to.to_rfc3339()),
            (
                "2026-11-27T08:00:00+00:00".into(),
                "2026-11-27T10:00:00+00:00".into()
            )
        );
        assert_eq!(stats_window(&[], now).unwrap().0.granularity, "hour");
    }
}
