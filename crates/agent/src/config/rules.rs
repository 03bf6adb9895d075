//! Rule tuning: a profile's `[rules]` table into [`RuleSettings`], a tag's rule keys into
//! [`TagRules`], a station's `change_windows` into [`ChangeWindow`]s.
//!
//! Every key is optional: a missing `[rules]` key takes its default from `defaults` (which
//! refers to `RuleSettings`' own), a missing tag key falls back to the profile's setting. A tag
//! key that the rules would ignore for that tag (a `deadband` on a status tag) is an error
//! rather than silently without effect.

use std::time::Duration;

use super::defaults::{self, Int};
use super::raw;
use super::report::{type_name, Report};
use crate::rules::{ChangeWindow, RuleSettings, TagRules};
use crate::source::TagSpec;
use crate::source::{DataType, TagRole};
use linesentry_common::config::spans::{child, item};
use linesentry_event::Timestamp;

/// The validated `[rules]` table at `at`; `None` when any key had an error.
pub(super) fn settings(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Rules,
) -> Option<RuleSettings> {
    let before = report.error_count();
    let key = |k: &str| child(at, k);
    let unreachable_after = report.int(
        &key("unreachable_after"),
        raw.unreachable_after,
        defaults::UNREACHABLE_AFTER,
    );
    let unreachable_escalate_after = seconds(
        report,
        &key("unreachable_escalate_after_s"),
        raw.unreachable_escalate_after_s,
        defaults::UNREACHABLE_ESCALATE_AFTER_S,
    );
    let status_heartbeat = seconds(
        report,
        &key("status_heartbeat_s"),
        raw.status_heartbeat_s,
        defaults::STATUS_HEARTBEAT_S,
    );
    let measurement_heartbeat = seconds(
        report,
        &key("measurement_heartbeat_s"),
        raw.measurement_heartbeat_s,
        defaults::MEASUREMENT_HEARTBEAT_S,
    );
    let deadband_percent = report.float(
        &key("deadband_percent"),
        raw.deadband_percent,
        defaults::DEADBAND_PERCENT,
    );
    let (quality_window, quality_failures) = quality(report, at, raw);
    let auth_burst = report.int(&key("auth_burst"), raw.auth_burst, defaults::AUTH_BURST);
    let auth_window = seconds(
        report,
        &key("auth_window_s"),
        raw.auth_window_s,
        defaults::AUTH_WINDOW_S,
    );
    let exception_burst = report.int(
        &key("exception_burst"),
        raw.exception_burst,
        defaults::EXCEPTION_BURST,
    );
    let exception_window = seconds(
        report,
        &key("exception_window_s"),
        raw.exception_window_s,
        defaults::EXCEPTION_WINDOW_S,
    );
    let (diag_scan, diag_flood) = diag_rates(report, at, raw);
    let stale_after = seconds(
        report,
        &key("stale_after_s"),
        raw.stale_after_s,
        defaults::STALE_AFTER_S,
    );
    let clock_skew = report
        .int(
            &key("clock_skew_ms"),
            raw.clock_skew_ms,
            defaults::CLOCK_SKEW_MS,
        )
        .map(|ms| Duration::from_millis(ms as u64));
    let session_margin = report.int(
        &key("session_margin"),
        raw.session_margin,
        defaults::SESSION_MARGIN,
    );
    let (trend_points, trend_margin_percent, alarm_grace) = trend_and_alarm(report, at, raw);
    if report.error_count() > before {
        return None;
    }
    // Every range above is positive and small, so the casts are exact.
    Some(RuleSettings {
        unreachable_after: unreachable_after? as u32,
        unreachable_escalate_after: unreachable_escalate_after?,
        status_heartbeat: status_heartbeat?,
        measurement_heartbeat: measurement_heartbeat?,
        deadband_percent: deadband_percent?,
        quality_window: quality_window? as usize,
        quality_failures: quality_failures? as usize,
        auth_burst: auth_burst? as usize,
        auth_window: auth_window?,
        exception_burst: exception_burst? as usize,
        exception_window: exception_window?,
        diag_scan_exceptions_per_min: diag_scan? as u64,
        diag_flood_messages_per_s: diag_flood? as u64,
        stale_after: stale_after?,
        clock_skew: clock_skew?,
        session_margin: session_margin? as u64,
        trend_points: trend_points? as usize,
        trend_margin_percent: trend_margin_percent?,
        alarm_grace: alarm_grace?,
        change_windows: Vec::new(),
    })
}

/// `diag_scan_exceptions_per_min` and `diag_flood_messages_per_s`.
fn diag_rates(report: &mut Report<'_>, at: &str, raw: &raw::Rules) -> (Option<i64>, Option<i64>) {
    let scan = report.int(
        &child(at, "diag_scan_exceptions_per_min"),
        raw.diag_scan_exceptions_per_min,
        defaults::DIAG_SCAN_EXCEPTIONS_PER_MIN,
    );
    let flood = report.int(
        &child(at, "diag_flood_messages_per_s"),
        raw.diag_flood_messages_per_s,
        defaults::DIAG_FLOOD_MESSAGES_PER_S,
    );
    (scan, flood)
}

/// `quality_window` and `quality_failures`, the latter at most the former.
fn quality(report: &mut Report<'_>, at: &str, raw: &raw::Rules) -> (Option<i64>, Option<i64>) {
    let key = |k: &str| child(at, k);
    let quality_window = report.int(
        &key("quality_window"),
        raw.quality_window,
        defaults::QUALITY_WINDOW,
    );
    let quality_failures = report.int(
        &key("quality_failures"),
        raw.quality_failures,
        defaults::QUALITY_FAILURES,
    );
    if let (Some(window), Some(failures)) = (quality_window, quality_failures) {
        if failures > window {
            report.error(
                &key("quality_failures"),
                format!(
                    "expected an integer between 1 and quality_window ({window}): at most as many failures as checks in the window, found {failures}"
                ),
            );
        }
    }
    (quality_window, quality_failures)
}

/// `trend_points`, `trend_margin_percent` and `alarm_grace_s`.
fn trend_and_alarm(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Rules,
) -> (Option<i64>, Option<f64>, Option<Duration>) {
    let key = |k: &str| child(at, k);
    let trend_points = report.int(
        &key("trend_points"),
        raw.trend_points,
        defaults::TREND_POINTS,
    );
    let trend_margin_percent = report.float(
        &key("trend_margin_percent"),
        raw.trend_margin_percent,
        defaults::TREND_MARGIN_PERCENT,
    );
    let alarm_grace = seconds(
        report,
        &key("alarm_grace_s"),
        raw.alarm_grace_s,
        defaults::ALARM_GRACE_S,
    );
    (trend_points, trend_margin_percent, alarm_grace)
}

/// A `*_s` key (or its default) as a duration.
fn seconds(
    report: &mut Report<'_>,
    at: &str,
    given: Option<i64>,
    setting: Int,
) -> Option<Duration> {
    report
        .int(at, given, setting)
        .map(|s| Duration::from_secs(s as u64))
}

/// A per-tag `*_s` key: `None` when not given (the profile's setting applies) or invalid.
fn tag_seconds(
    report: &mut Report<'_>,
    at: &str,
    given: Option<i64>,
    setting: Int,
) -> Option<Duration> {
    given
        .and_then(|s| report.range(at, s, setting))
        .map(|s| Duration::from_secs(s as u64))
}

/// The rule keys of the tag at `at`. `role` and `data_type` are `None` when they were
/// invalid (already reported); the keys' own ranges are still checked then.
pub(super) fn tag_rules(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    role: Option<TagRole>,
    data_type: Option<DataType>,
) -> TagRules {
    let key = |k: &str| child(at, k);
    let misplaced = misplaced(report, at, raw, role, data_type);
    let mut rules = TagRules::default();
    if let (Some(value), false) = (raw.deadband, misplaced[0]) {
        if value.is_finite() && value >= defaults::DEADBAND_MIN {
            rules.deadband_abs = Some(value);
        } else {
            let unit = raw
                .unit
                .as_deref()
                .map_or_else(String::new, |u| format!(", {u}"));
            report.error(
                &key("deadband"),
                format!(
                    "expected a finite number >= {} (engineering units{unit}), found {value}",
                    defaults::DEADBAND_MIN
                ),
            );
        }
    }
    if let (Some(value), false) = (raw.deadband_percent, misplaced[1]) {
        rules.deadband_percent =
            report.float_range(&key("deadband_percent"), value, defaults::DEADBAND_PERCENT);
        if raw.deadband.is_some() && !misplaced[0] {
            report.error(
                &key("deadband_percent"),
                "`deadband` and `deadband_percent` are both given, and an absolute `deadband` replaces the percentage; expected one of them",
            );
        }
    }
    if let (Some(given), false) = (raw.heartbeat_s, misplaced[2]) {
        // Status and measurement heartbeats share one range; either falls back to its own.
        let setting = if role == Some(TagRole::Status) {
            defaults::STATUS_HEARTBEAT_S
        } else {
            defaults::MEASUREMENT_HEARTBEAT_S
        };
        rules.heartbeat = tag_seconds(report, &key("heartbeat_s"), Some(given), setting);
    }
    if let Some(ms) = raw.debounce_ms {
        if let Some(ms) = report.range(&key("debounce_ms"), ms, defaults::DEBOUNCE_MS) {
            rules.debounce = Duration::from_millis(ms as u64);
        }
    }
    if !misplaced[3] {
        rules.stale_after = tag_seconds(
            report,
            &key("stale_after_s"),
            raw.stale_after_s,
            defaults::STALE_AFTER_S,
        );
    }
    trend_and_alarm_keys(report, at, raw, &misplaced, &mut rules);
    rules
}

/// Reports each rule key given on a tag it does not apply to; `true` at the key's index in
/// the table below means it is to be ignored.
fn misplaced(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    role: Option<TagRole>,
    data_type: Option<DataType>,
) -> [bool; 9] {
    let measurement = role.map(|r| r == TagRole::Measurement);
    let numeric_measurement = measurement.and_then(|m| data_type.map(|t| m && t.is_numeric()));
    let heartbeat_role = role.map(|r| matches!(r, TagRole::Status | TagRole::Measurement));
    let with_limits = numeric_measurement.map(|m| m && raw.limits.is_some());
    // (key, given, applies, to what it applies)
    let applicability = [
        (
            "deadband",
            raw.deadband.is_some(),
            numeric_measurement,
            "numeric measurement tags",
        ),
        (
            "deadband_percent",
            raw.deadband_percent.is_some(),
            numeric_measurement,
            "numeric measurement tags",
        ),
        (
            "heartbeat_s",
            raw.heartbeat_s.is_some(),
            heartbeat_role,
            "status and measurement tags",
        ),
        (
            "stale_after_s",
            raw.stale_after_s.is_some(),
            measurement,
            "measurement tags",
        ),
        (
            "trend_points",
            raw.trend_points.is_some(),
            with_limits,
            "numeric measurement tags with limits",
        ),
        (
            "trend_margin_percent",
            raw.trend_margin_percent.is_some(),
            with_limits,
            "numeric measurement tags with limits",
        ),
        (
            "alarm_high",
            raw.alarm_high.is_some(),
            numeric_measurement,
            "numeric measurement tags",
        ),
        (
            "alarm_low",
            raw.alarm_low.is_some(),
            numeric_measurement,
            "numeric measurement tags",
        ),
        (
            "alarm_active",
            raw.alarm_active.is_some(),
            numeric_measurement,
            "numeric measurement tags",
        ),
    ];
    let mut misplaced = [false; 9];
    for (i, (name, given, applies, what)) in applicability.into_iter().enumerate() {
        // `applies` is known only when the role (and, where it matters, the type) is.
        if let (true, Some(false), Some(role)) = (given, applies, role) {
            report.error(
                &child(at, name),
                format!(
                    "`{name}` only applies to {what}; expected no `{name}` on a {role} tag of type {}",
                    raw.data_type.as_deref().unwrap_or_default()
                ),
            );
            misplaced[i] = true;
        }
    }
    misplaced
}

/// The trend and alarm-link keys of a tag, where they apply (`misplaced` as above).
fn trend_and_alarm_keys(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    misplaced: &[bool; 9],
    rules: &mut TagRules,
) {
    let key = |k: &str| child(at, k);
    if let (Some(given), false) = (raw.trend_points, misplaced[4]) {
        rules.trend_points = report
            .range(&key("trend_points"), given, defaults::TREND_POINTS)
            .map(|n| n as usize);
    }
    if let (Some(given), false) = (raw.trend_margin_percent, misplaced[5]) {
        rules.trend_margin_percent = report.float_range(
            &key("trend_margin_percent"),
            given,
            defaults::TREND_MARGIN_PERCENT,
        );
    }
    // Tag names only here; what they name is checked once every tag is known (`alarm_links`).
    if !misplaced[6] {
        rules.alarm_high.clone_from(&raw.alarm_high);
    }
    if !misplaced[7] {
        rules.alarm_low.clone_from(&raw.alarm_low);
    }
    if !misplaced[8] {
        rules.alarm_active.clone_from(&raw.alarm_active);
    }
}

fn article(role: TagRole) -> &'static str {
    if role.to_string().starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Checks what the measurements' `alarm_high`, `alarm_low` and `alarm_active` name, once
/// every tag of the profile is known: alarm-limit tags for the limits, an alarm-active tag
/// for the indication. A measurement with a limit and no `alarm_active` gets the profile's
/// only alarm-active tag; with none or several, it must name one. `tags` pairs each valid
/// tag with its position in `[[tags]]`, for the key paths; `declared` is every tag's name
/// and role as written, valid or not, so that a link to a tag with errors of its own is not
/// reported a second time.
pub(super) fn alarm_links(
    report: &mut Report<'_>,
    tags: &mut [(usize, TagSpec)],
    declared: &[(String, String)],
) {
    let declared_as = |role: TagRole| {
        let text = role.to_string();
        declared
            .iter()
            .filter(|(_, r)| *r == text)
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (limits, actives) = (
        declared_as(TagRole::AlarmLimit),
        declared_as(TagRole::AlarmActive),
    );
    let valid = |name: &str| {
        tags.iter()
            .find(|(_, t)| t.name == name)
            .map(|(_, t)| t.role)
    };
    let mut defaults = Vec::new();
    for (i, tag) in tags.iter() {
        let at = item("tags", *i);
        let rules = &tag.rules;
        let links = [
            (
                "alarm_high",
                &rules.alarm_high,
                TagRole::AlarmLimit,
                &limits,
            ),
            ("alarm_low", &rules.alarm_low, TagRole::AlarmLimit, &limits),
            (
                "alarm_active",
                &rules.alarm_active,
                TagRole::AlarmActive,
                &actives,
            ),
        ];
        for (key, name, role, candidates) in links {
            let Some(name) = name else { continue };
            let expected = if candidates.is_empty() {
                format!("expected the name of an {role} tag, and the profile has none")
            } else {
                format!("expected the name of an {role} tag: {}", quoted(candidates))
            };
            let problem = match valid(name) {
                Some(found) if found == role => continue,
                Some(found) => format!("`{name}` is {} {found} tag; {expected}", article(found)),
                // Declared with errors of its own, already reported.
                None if declared.iter().any(|(n, _)| n == name) => continue,
                None => format!("no tag is named `{}`; {expected}", name.escape_debug()),
            };
            report.error(&child(&at, key), problem);
        }
        let limited = rules.alarm_high.is_some() || rules.alarm_low.is_some();
        match (limited, &rules.alarm_active, actives.as_slice()) {
            (false, Some(_), _) => report.error(
                &child(&at, "alarm_active"),
                "`alarm_active` without `alarm_high` or `alarm_low` has no limit to watch; expected an alarm limit with it",
            ),
            (true, None, [only]) if valid(only).is_some() => defaults.push((*i, only.clone())),
            // The only alarm output has errors of its own, already reported.
            (true, None, [_]) => {}
            (true, None, []) => report.error(
                &child(
                    &at,
                    if rules.alarm_high.is_some() {
                        "alarm_high"
                    } else {
                        "alarm_low"
                    },
                ),
                "an alarm limit needs an alarm indication to check; expected a tag with role = \"alarm_active\" in the profile",
            ),
            (true, None, several) => report.error(
                &child(&at, "alarm_active"),
                format!(
                    "missing key `alarm_active`: the profile has several alarm_active tags; expected one of {}",
                    quoted(several)
                ),
            ),
            _ => {}
        }
    }
    for (i, tag) in tags.iter_mut() {
        if let Some((_, only)) = defaults.iter().find(|(d, _)| d == i) {
            tag.rules.alarm_active = Some(only.clone());
        }
    }
}

/// A station's `change_windows` at `at`; `None` when any window had an error.
pub(super) fn change_windows(
    report: &mut Report<'_>,
    at: &str,
    given: Option<&[raw::ChangeWindow]>,
) -> Option<Vec<ChangeWindow>> {
    let before = report.error_count();
    let mut out = Vec::new();
    for (i, window) in given.unwrap_or_default().iter().enumerate() {
        let at = item(at, i);
        let start = datetime(report, &child(&at, "start"), &window.start);
        let end = datetime(report, &child(&at, "end"), &window.end);
        if let (Some((start, start_text)), Some((end, end_text))) = (start, end) {
            if start >= end {
                report.error(
                    &child(&at, "end"),
                    format!(
                        "expected end after start, found start = {start_text} and end = {end_text}"
                    ),
                );
            }
            out.push(ChangeWindow { start, end });
        }
    }
    (report.error_count() == before).then_some(out)
}

/// An RFC 3339 date-time with an offset, quoted or as a TOML date-time literal; with the text
/// as written, for messages.
fn datetime(report: &mut Report<'_>, at: &str, value: &toml::Value) -> Option<(Timestamp, String)> {
    let example = defaults::DATETIME_EXAMPLE;
    // Through `serde_path_to_error` a TOML date-time literal may arrive as its text.
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Datetime(dt) => dt.to_string(),
        other => {
            report.error(
                at,
                format!(
                    "expected an RFC 3339 date-time such as `{example}`, found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(dt) => Some((Timestamp::from_micros(dt.timestamp_micros()), text)),
        Err(e) => {
            let why = match text.parse::<toml::value::Datetime>() {
                Ok(dt) if dt.offset.is_none() => {
                    "a local date or time, which has no UTC offset; add `Z` for UTC or an offset such as `+01:00`".to_owned()
                }
                _ => e.to_string(),
            };
            report.error(
                at,
                format!(
                    "expected an RFC 3339 date-time with a UTC offset such as `{example}`, found `{}` ({why})",
                    text.escape_debug()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn an_empty_rules_table_gives_the_rules_engines_defaults() {
        let mut report = Report::new(Path::new("p.toml"), "");
        let settings = settings(&mut report, "rules", &raw::Rules::default());
        assert_eq!(report.error_count(), 0);
        assert_eq!(settings, Some(RuleSettings::default()));
    }

    #[test]
    fn change_window_times_may_be_strings_or_toml_date_times() {
        let text = "w = [{ start = \"2026-11-28T07:00:00+01:00\", end = 2026-11-28T10:00:00Z }]\n";
        let mut report = Report::new(Path::new("a.toml"), text);
        let table: toml::Table = toml::from_str(text).unwrap();
        let raw: Vec<raw::ChangeWindow> = table["w"].clone().try_into().unwrap();
        let windows = change_windows(&mut report, "w", Some(&raw)).unwrap();
        assert_eq!(report.error_count(), 0);
        let six = chrono::DateTime::parse_from_rfc3339("2026-11-28T06:00:00Z").unwrap();
        assert_eq!(windows[0].start.as_micros(), six.timestamp_micros());
        assert_eq!(
            windows[0].end.as_micros() - windows[0].start.as_micros(),
            4 * 3600 * 1_000_000
        );
    }

    #[test]
    fn a_local_date_time_without_offset_is_refused() {
        let text = "w = [{ start = 2026-11-28T06:00:00, end = 2026-11-28T10:00:00Z }]\n";
        let mut report = Report::new(Path::new("a.toml"), text);
        let table: toml::Table = toml::from_str(text).unwrap();
        let raw: Vec<raw::ChangeWindow> = table["w"].clone().try_into().unwrap();
        assert!(change_windows(&mut report, "w", Some(&raw)).is_none());
        let errors = report.into_errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .contains("a.toml:1: `w[0].start`: expected an RFC 3339 date-time with a UTC offset"));
    }
}
