//! How the console describes an event to a person: a one-line summary built from its data
//! ([`summary`]) and the MITRE ATT&CK for ICS techniques it maps to, with their names and
//! links ([`techniques`], [`TECHNIQUES`]). Pure; the API and the stream add both to every
//! event they show ([`view_json`]), so the page has one source of truth and no copy of the
//! catalogue in JavaScript.
//!
//! Event data comes from the field and may be anything: every value is shortened
//! ([`MAX_VALUE`]), the line is bounded ([`MAX_LINE`]), a missing member reads `?`, and a
//! type this build does not know gets a generic summary of its first members. The page sets
//! the summary as text, never as markup.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::rows::{stored_json, Stored, SOURCE_GATEWAY, SOURCE_STATION};
use linesentry_event::{catalog_entry, SecurityEvent};

/// Longest rendering of one value in a summary, in characters.
pub const MAX_VALUE: usize = 60;
/// Longest summary, in characters.
pub const MAX_LINE: usize = 240;

/// An ATT&CK for ICS technique the catalogue refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    pub id: &'static str,
    pub name: &'static str,
    /// ATT&CK for ICS tactics the technique belongs to (the columns of the matrix).
    pub tactics: &'static [&'static str],
}

impl Technique {
    pub fn url(&self) -> String {
        format!("https://attack.mitre.org/techniques/{}/", self.id)
    }
}

const fn t(id: &'static str, name: &'static str, tactics: &'static [&'static str]) -> Technique {
    Technique { id, name, tactics }
}

/// The tactics of ATT&CK for ICS, in the order of the matrix.
pub const TACTICS: &[&str] = &[
    "Initial Access",
    "Execution",
    "Persistence",
    "Privilege Escalation",
    "Evasion",
    "Discovery",
    "Lateral Movement",
    "Collection",
    "Command and Control",
    "Inhibit Response Function",
    "Impair Process Control",
    "Impact",
];

/// Every technique linesentry's catalogue (and the collector's integrity reports) names.
pub const TECHNIQUES: &[Technique] = &[
    t("T0815", "Denial of View", &["Impact"]),
    t(
        "T0816",
        "Device Restart/Shutdown",
        &["Inhibit Response Function"],
    ),
    t("T0821", "Modify Controller Tasking", &["Execution"]),
    t("T0826", "Loss of Availability", &["Impact"]),
    t("T0827", "Loss of Control", &["Impact"]),
    t("T0830", "Adversary-in-the-Middle", &["Collection"]),
    t("T0831", "Manipulation of Control", &["Impact"]),
    t("T0836", "Modify Parameter", &["Impair Process Control"]),
    t(
        "T0838",
        "Modify Alarm Settings",
        &["Inhibit Response Function"],
    ),
    t("T0843", "Program Download", &["Lateral Movement"]),
    t("T0846", "Remote System Discovery", &["Discovery"]),
    t(
        "T0856",
        "Spoof Reporting Message",
        &["Evasion", "Impair Process Control"],
    ),
    t(
        "T0857",
        "System Firmware",
        &["Persistence", "Inhibit Response Function"],
    ),
    t("T0858", "Change Operating Mode", &["Execution", "Evasion"]),
    t(
        "T0859",
        "Valid Accounts",
        &["Persistence", "Lateral Movement"],
    ),
    t("T0872", "Indicator Removal on Host", &["Evasion"]),
    t("T0878", "Alarm Suppression", &["Inhibit Response Function"]),
    t("T0880", "Loss of Safety", &["Impact"]),
    t(
        "T0886",
        "Remote Services",
        &["Initial Access", "Lateral Movement"],
    ),
];

/// The technique with this id, if the catalogue names it.
pub fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|t| t.id == id)
}

/// The technique ids of an event: its `event_data.attack` (what the agent or collector
/// attached), else its catalogue row's. At most 8, each at most 16 characters.
pub fn attack_ids(event_type: &str, data: &Map<String, Value>) -> Vec<String> {
    let from_data: Vec<String> = data
        .get("attack")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 16)
                .take(8)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !from_data.is_empty() {
        return from_data;
    }
    catalog_entry(event_type)
        .map(|e| e.attack.iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default()
}

/// The techniques of an event as JSON: `[{"id", "name", "url"}]`; an id the table does not
/// know keeps its id with a null name.
pub fn techniques(event_type: &str, data: &Map<String, Value>) -> Value {
    Value::Array(
        attack_ids(event_type, data)
            .into_iter()
            .map(|id| {
                let known = technique(&id);
                serde_json::json!({
                    "id": id,
                    "name": known.map(|t| t.name),
                    "url": known.map(Technique::url),
                })
            })
            .collect(),
    )
}

/// The event as the API and the stream show it: [`stored_json`] plus `summary` and
/// `attack_techniques`.
pub fn view_json(s: &Stored) -> Value {
    let mut v = stored_json(s);
    if let Value::Object(m) = &mut v {
        m.insert("summary".into(), summary(&s.event).into());
        m.insert(
            "attack_techniques".into(),
            techniques(&s.event.event_type, &s.event.event_data),
        );
    }
    v
}

/// Shortens `s` to `max` characters, marking the cut with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A JSON value as a person reads it: strings without quotes, numbers as written, objects
/// and arrays compact; control characters become spaces; at most [`MAX_VALUE`] characters.
fn text(v: &Value) -> String {
    let raw = match v {
        Value::Null => "none".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        other => other.to_string(),
    };
    let clean: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(&clean, MAX_VALUE)
}

/// A number as a person reads it: whole numbers as they are, fractions to four decimals
/// without trailing zeros (a float reading of 24.245201110839844 reads 24.2452).
fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.is_finite() => {
            let s = format!("{f:.4}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        _ => n.to_string(),
    }
}

/// Reads the members of one event's data.
struct Data<'a>(&'a Map<String, Value>);

impl Data<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    /// The member as text, `?` when missing.
    fn s(&self, key: &str) -> String {
        self.get(key).map_or_else(|| "?".to_owned(), text)
    }
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(false)
    }
    /// ` unit` when the event names one.
    fn unit(&self) -> String {
        self.get("unit")
            .map(|u| format!(" {}", text(u)))
            .unwrap_or_default()
    }
    /// `previous -> value` (or just the value when there is no previous).
    fn change(&self, value: &str, previous: &str) -> String {
        match (self.get(previous), self.get(value)) {
            (Some(p), Some(v)) => format!("{} -> {}", text(p), text(v)),
            (None, Some(v)) => text(v),
            (Some(p), None) => format!("{} -> ?", text(p)),
            (None, None) => "?".to_owned(),
        }
    }
    /// `min..max` of a `limit` object.
    fn limit(&self) -> Option<String> {
        let l = self.get("limit")?;
        Some(format!(
            "{}..{}",
            l.get("min").map_or_else(|| "?".to_owned(), text),
            l.get("max").map_or_else(|| "?".to_owned(), text)
        ))
    }
    fn window(&self) -> &'static str {
        if self.flag("authorised") {
            " (inside a change window)"
        } else {
            " (outside change window)"
        }
    }
}

/// What an event is about, as the line's prefix: the station, else the gateway (for the
/// collector's own events, the gateway and station they are about).
fn subject(e: &SecurityEvent) -> String {
    let data = Data(&e.event_data);
    let about = data.get(SOURCE_GATEWAY).map(text);
    let station = e
        .station_id
        .clone()
        .or_else(|| data.get(SOURCE_STATION).map(text));
    match (station, about) {
        (Some(s), _) => text(&Value::String(s)),
        (None, Some(g)) => g,
        (None, None) => text(&Value::String(e.gateway_id.clone())),
    }
}

/// The one-line summary of an event, e.g. `press-a: setpoint die_temp_sp changed 1500 ->
/// 2100 (outside change window)`.
pub fn summary(e: &SecurityEvent) -> String {
    let line = format!(
        "{}: {}",
        subject(e),
        body(&e.event_type, &Data(&e.event_data))
    );
    clip(&line, MAX_LINE)
}

#[allow(clippy::too_many_lines)] // one arm per catalogue type reads best as one match
fn body(event_type: &str, d: &Data<'_>) -> String {
    let tag = || d.s("tag");
    match event_type {
        "equipment.status" => {
            let state = if d.has("state") {
                d.s("state")
            } else {
                d.s("value")
            };
            if d.flag("heartbeat") {
                format!("status {state} (heartbeat)")
            } else if d.has("previous_state") {
                format!("status {} -> {state}", d.s("previous_state"))
            } else {
                format!("status {state}")
            }
        }
        "equipment.measurement" => format!("{} = {}{}", tag(), d.s("value"), d.unit()),
        "equipment.fault" => format!(
            "fault: {} is {}",
            tag(),
            if d.has("state") {
                d.s("state")
            } else {
                d.s("value")
            }
        ),
        "quality.check" => {
            let mut s = format!(
                "quality {} {}: {}{}",
                tag(),
                d.s("result"),
                d.s("value"),
                d.unit()
            );
            if let Some(l) = d.limit() {
                let _ = write!(s, " (limits {l})");
            }
            if d.has("part_id") {
                let _ = write!(s, ", part {}", d.s("part_id"));
            }
            s
        }
        "quality.anomaly" => {
            if d.has("failures") {
                format!(
                    "quality anomaly on {}: {} of the last {} checks failed",
                    tag(),
                    d.s("failures"),
                    d.s("of_last")
                )
            } else {
                format!(
                    "quality anomaly on {}: {} trend towards the {} limit",
                    tag(),
                    d.s("direction"),
                    d.s("towards")
                )
            }
        }
        "device.unreachable" => {
            let mut s = format!(
                "unreachable after {} failed polls: {}",
                d.s("failed_polls"),
                d.s("reason")
            );
            if d.flag("escalated") {
                let _ = write!(s, " (down for {} s)", d.s("down_for_s"));
            }
            s
        }
        "device.recovered" => format!("reachable again after {} s", d.s("down_for_s")),
        "device.restarted" => format!("device restarted: {}", d.s("reason")),
        "diag.counters_reset" => format!(
            "diagnostic counter {} reset {}",
            tag(),
            d.change("value", "previous")
        ),
        "mode.changed" => {
            let change = if d.has("state") {
                d.change("state", "previous_state")
            } else {
                d.change("value", "previous")
            };
            format!("mode {change}{}", d.window())
        }
        "setpoint.changed" => format!(
            "setpoint {} changed {}{}{}",
            tag(),
            d.change("value", "previous"),
            d.unit(),
            d.window()
        ),
        "setpoint.out_of_range" => format!(
            "setpoint {} = {}{} outside its limits {}",
            tag(),
            d.s("value"),
            d.unit(),
            d.limit().unwrap_or_else(|| "?".into())
        ),
        "alarm_limit.changed" => format!(
            "alarm setting {} changed {}",
            tag(),
            d.change("value", "previous")
        ),
        "alarm.suppressed" => {
            if d.has("tag") {
                format!("alarm suppressed: {} = {}", tag(), d.s("value"))
            } else {
                format!("alarm suppressed: {}", d.s("reason"))
            }
        }
        "program.changed" => format!("program {}", d.change("value", "previous")),
        "firmware.changed" => format!("firmware {}", d.change("value", "previous")),
        "identity.changed" => identity(d),
        "cert.invalid" => format!("server certificate refused: {}", d.s("reason")),
        "security_policy.downgraded" => {
            if d.has("value") {
                format!(
                    "security policy downgraded {}",
                    d.change("value", "previous")
                )
            } else {
                format!("security policy downgraded: {}", d.s("reason"))
            }
        }
        "auth.failed" => {
            if d.has("rejected_sessions") {
                format!(
                    "{} session(s) rejected by the server ({} in window)",
                    d.s("rejected_sessions"),
                    d.s("failures_in_window")
                )
            } else {
                format!("authentication failed: {}", d.s("reason"))
            }
        }
        "security.violation" => violation(d),
        "session.anomaly" => format!(
            "{} sessions from others on the server, baseline {}",
            d.s("other_sessions"),
            d.s("baseline")
        ),
        "value.stale" => format!("{} stale: {}", tag(), d.s("reason")),
        "agent.buffer_high" => format!(
            "buffer {} % full ({} events)",
            d.s("used_percent"),
            d.s("depth")
        ),
        "agent.buffer_dropped" => format!(
            "buffer full: dropped {} events (seq {} to {})",
            d.s("count"),
            d.s("first_seq"),
            d.s("last_seq")
        ),
        "agent.buffer_reset" => format!("buffer store reset: {}", d.s("reason")),
        "forward.dead_lettered" => format!(
            "{} events dead-lettered by {}: {}",
            d.s("count"),
            d.s("sink"),
            d.s("reason")
        ),
        "forward.upstream_down" => format!(
            "forwarding via {} down for {} ms, {} buffered: {}",
            d.s("sink"),
            d.s("down_for_ms"),
            d.s("buffered"),
            d.s("last_error")
        ),
        "agent.clock_skew" => format!(
            "device clock off by {} ms (limit {} ms)",
            d.s("skew_ms"),
            d.s("limit_ms")
        ),
        "agent.started" => {
            let listed = d
                .get("station_list")
                .and_then(Value::as_array)
                .map(Vec::len);
            let stations = match listed {
                Some(n) if !d.has("stations") => n.to_string(),
                _ => d.s("stations"),
            };
            format!("agent {} started with {stations} stations", d.s("version"))
        }
        "agent.stopped" => format!(
            "agent stopped after {} readings, {} events",
            d.s("readings"),
            d.s("events")
        ),
        "agent.config_changed" => format!(
            "configuration changed {}",
            d.change("config_digest", "previous_digest")
        ),
        "user.login" => format!("login of {}", d.s("user")),
        "user.logout" => format!("logout of {}", d.s("user")),
        "access.denied" => format!("access denied to {}: {}", d.s("resource"), d.s("reason")),
        "api.access" => format!("{} {} -> {}", d.s("method"), d.s("path"), d.s("status")),
        "system.error" => format!("error: {}", d.s("message")),
        "collector.started" => format!("collector {} started on {}", d.s("version"), d.s("http")),
        "alert.raised" => format!(
            "alert {}: {} events in {} s",
            d.s("rule"),
            d.s("count"),
            d.s("window_s")
        ),
        "alert.acknowledged" => format!("alert {} acknowledged", d.s("rule")),
        "ingest.rejected" => format!("batch rejected ({}): {}", d.s("kind"), d.s("reason")),
        "webhook.failed" => format!(
            "webhook {} failed after {} attempts: {}",
            d.s("webhook"),
            d.s("attempts"),
            d.s("error")
        ),
        "siem.delivery_failed" => format!(
            "SIEM destination {} ({} to {}) failing, {} attempts: {}",
            d.s("destination"),
            d.s("transport"),
            d.s("address"),
            d.s("failures"),
            d.s("error")
        ),
        "siem.recovered" => format!(
            "SIEM destination {} ({}) delivers again",
            d.s("destination"),
            d.s("transport")
        ),
        "siem.test" => format!("SIEM test message to {}", d.s("destination")),
        "gateway.online" => "gateway online".to_owned(),
        "gateway.offline" => "gateway offline".to_owned(),
        other => generic(other, d),
    }
}

/// `identity.changed`: each changed field with its old and new value.
fn identity(d: &Data<'_>) -> String {
    let Some(changes) = d.get("changes").and_then(Value::as_object) else {
        return format!("identity changed {}", d.change("current", "previous"));
    };
    let parts: Vec<String> = changes
        .iter()
        .take(4)
        .map(|(field, c)| {
            let get = |k: &str| {
                c.get(k)
                    .filter(|v| !v.is_null())
                    .map_or_else(|| "?".into(), text)
            };
            format!(
                "{} {} -> {}",
                clip(field, 30),
                get("previous"),
                get("value")
            )
        })
        .collect();
    format!("identity changed: {}", parts.join(", "))
}

fn violation(d: &Data<'_>) -> String {
    match d.get("kind").and_then(Value::as_str) {
        Some("modbus_scan") => format!(
            "scan: {} Modbus exceptions {} within {} s",
            d.s("exceptions"),
            d.s("codes"),
            d.s("window_s")
        ),
        Some("auth_burst") => format!(
            "{} failed logins for {} within {} s",
            d.s("failures"),
            d.s("key"),
            d.s("window_s")
        ),
        Some(kind) => format!(
            "integrity violation {}: {}",
            text(&Value::from(kind)),
            d.s("reason")
        ),
        None => format!("security violation: {}", d.s("reason")),
    }
}

/// A type this build does not know: its name and its first members.
fn generic(event_type: &str, d: &Data<'_>) -> String {
    let members: Vec<String> =
        d.0.iter()
            .filter(|(k, _)| k.as_str() != "attack")
            .take(4)
            .map(|(k, v)| format!("{}={}", clip(k, 30), text(v)))
            .collect();
    let name = clip(
        &event_type
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>(),
        MAX_VALUE,
    );
    if members.is_empty() {
        name
    } else {
        format!("{name} {}", members.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, CATALOG};
    use serde_json::json;

    /// A plausible event of each type, with the data the agent or the collector gives it.
    fn sample(t: EventType) -> SecurityEvent {
        let d = |pairs: Value| SecurityEvent {
            event_data: pairs.as_object().cloned().unwrap_or_default(),
            ..SecurityEvent::new("gw-1", t).station("press-a")
        };
        match t {
            EventType::EquipmentStatus => {
                d(json!({"tag": "state", "value": 1, "state": "run", "previous_state": "idle"}))
            }
            EventType::EquipmentMeasurement => {
                d(json!({"tag": "die_temp", "value": 212.5, "unit": "°C"}))
            }
            EventType::EquipmentFault => d(json!({"tag": "state", "value": 9, "state": "estop"})),
            EventType::QualityCheck => d(
                json!({"tag": "thickness", "value": 1.9, "result": "fail", "limit": {"min": 2.0, "max": 3.0}, "part_id": "P-77"}),
            ),
            EventType::QualityAnomaly => {
                d(json!({"tag": "thickness", "failures": 3, "of_last": 5}))
            }
            EventType::DeviceUnreachable => {
                d(json!({"failed_polls": 3, "reason": "timed out after 500 ms"}))
            }
            EventType::DeviceRecovered => d(json!({"down_for_s": 12.5, "failed_polls": 7})),
            EventType::DeviceRestarted => d(json!({"reason": "server start time changed"})),
            EventType::DiagCountersReset => {
                d(json!({"tag": "bus_messages", "value": 0, "previous": 9000}))
            }
            EventType::ModeChanged => d(
                json!({"tag": "mode", "value": 2, "previous": 1, "state": "PROGRAM", "previous_state": "RUN"}),
            ),
            EventType::SetpointChanged => {
                d(json!({"tag": "die_temp_sp", "value": 2100, "previous": 1500}))
            }
            EventType::SetpointOutOfRange => {
                d(json!({"tag": "die_temp_sp", "value": 2600, "limit": {"min": 1000, "max": 2500}}))
            }
            EventType::AlarmLimitChanged => {
                d(json!({"tag": "temp_hi", "value": 300, "previous": 250}))
            }
            EventType::AlarmSuppressed => {
                d(json!({"tag": "alarm_enable", "value": false, "previous": true}))
            }
            EventType::ProgramChanged => {
                d(json!({"tag": "program_crc", "value": "0xBEEF", "previous": "0xCAFE"}))
            }
            EventType::FirmwareChanged => {
                d(json!({"value": "7.2.0-x", "previous": "7.1.0", "source": "build_info"}))
            }
            EventType::IdentityChanged => {
                d(json!({"changes": {"vendor": {"value": "Evil Corp", "previous": "ACME"}}}))
            }
            EventType::CertInvalid => d(json!({"reason": "certificate expired"})),
            EventType::SecurityPolicyDowngraded => {
                d(json!({"value": "Basic128Rsa15", "previous": "Basic256Sha256"}))
            }
            EventType::AuthFailed => d(json!({"reason": "BadUserAccessDenied"})),
            EventType::SecurityViolation => d(
                json!({"kind": "modbus_scan", "exceptions": 12, "codes": ["0x01", "0x02"], "window_s": 60}),
            ),
            EventType::SessionAnomaly => d(json!({"other_sessions": 4, "baseline": 1})),
            EventType::ValueStale => d(json!({"tag": "die_temp", "reason": "bad_quality"})),
            EventType::AgentBufferHigh => d(json!({"used_percent": 85, "depth": 12000})),
            EventType::AgentBufferDropped => {
                d(json!({"count": 10, "first_seq": 11, "last_seq": 20}))
            }
            EventType::AgentBufferReset => d(json!({"reason": "corrupt store"})),
            EventType::ForwardDeadLettered => {
                d(json!({"count": 2, "sink": "https", "reason": "413"}))
            }
            EventType::ForwardUpstreamDown => d(
                json!({"sink": "mqtt", "down_for_ms": 60000, "buffered": 50, "last_error": "refused"}),
            ),
            EventType::AgentClockSkew => d(json!({"skew_ms": 4000, "limit_ms": 2000})),
            EventType::AgentStarted => d(json!({"version": "0.9.0", "stations": 3})),
            EventType::AgentStopped => d(json!({"readings": 100, "events": 7})),
            EventType::AgentConfigChanged => {
                d(json!({"config_digest": "ab12", "previous_digest": "cd34"}))
            }
            EventType::UserLogin | EventType::UserLogout => d(json!({"user": "alice"})),
            EventType::AccessDenied => d(json!({"resource": "/recipes", "reason": "role"})),
            EventType::ApiAccess => {
                d(json!({"method": "GET", "path": "/api/v1/events", "status": 200}))
            }
            EventType::SystemError => d(json!({"message": "disk full"})),
            EventType::CollectorStarted => d(json!({"version": "0.9.0", "http": "127.0.0.1:8080"})),
            EventType::AlertRaised => {
                d(json!({"rule": "equipment-fault", "count": 1, "window_s": 300}))
            }
            EventType::AlertAcknowledged => d(json!({"rule": "equipment-fault"})),
            EventType::IngestRejected => d(json!({"kind": "malformed", "reason": "not JSON"})),
            EventType::WebhookFailed => d(json!({"webhook": "soc", "attempts": 8, "error": "503"})),
            EventType::SiemDeliveryFailed | EventType::SiemRecovered | EventType::SiemTest => d(
                json!({"destination": "soc", "transport": "relp", "address": "siem:2514", "failures": 3, "error": "refused"}),
            ),
            EventType::GatewayOnline | EventType::GatewayOffline => {
                d(json!({"source_gateway": "gw-1"}))
            }
        }
    }

    #[test]
    fn every_catalogue_type_has_its_own_summary_naming_its_values() {
        for t in EventType::ALL {
            let e = sample(*t);
            let line = summary(&e);
            assert!(line.starts_with("press-a: "), "{t}: {line}");
            assert!(
                !line.contains('?'),
                "{t} reads a member the sample lacks: {line}"
            );
            assert!(
                !line.contains(t.as_str()),
                "{t} fell through to the generic summary: {line}"
            );
            // Every string or number the sample carries at the top level that the summary
            // is meant to show: at least one of them appears.
            let shown = e.event_data.values().any(|v| match v {
                Value::String(s) => line.contains(s.as_str()),
                Value::Number(n) => line.contains(&n.to_string()),
                _ => false,
            }) || line.contains("Evil Corp")
                || line.contains("online")
                || line.contains("offline");
            assert!(shown, "{t}: {line} shows none of its data");
        }
    }

    #[test]
    fn long_fractions_are_rounded_and_whole_numbers_kept() {
        let e = SecurityEvent::new("gw-1", EventType::EquipmentMeasurement)
            .station("aoi-01")
            .data("tag", "offset")
            .data("value", 24.245_201_110_839_844)
            .data("unit", "µm");
        assert_eq!(summary(&e), "aoi-01: offset = 24.2452 µm");
        let e = e.data("value", 2100);
        assert_eq!(summary(&e), "aoi-01: offset = 2100 µm");
        let e = e.data("value", 1.5);
        assert_eq!(summary(&e), "aoi-01: offset = 1.5 µm");
    }

    #[test]
    fn the_issue_examples_read_as_written() {
        let e = sample(EventType::SetpointChanged);
        assert_eq!(
            summary(&e),
            "press-a: setpoint die_temp_sp changed 1500 -> 2100 (outside change window)"
        );
        let fw = SecurityEvent::new("gw-1", EventType::FirmwareChanged)
            .station("aoi-01")
            .data("value", "7.2.0-x")
            .data("previous", "7.1.0");
        assert_eq!(summary(&fw), "aoi-01: firmware 7.1.0 -> 7.2.0-x");
    }

    #[test]
    fn an_unknown_type_gets_a_generic_summary_and_missing_members_read_as_a_question_mark() {
        let mut e = SecurityEvent::new("gw-1", EventType::SetpointChanged);
        e.event_type = "vendor.thing_happened".into();
        e.event_data = json!({"a": 1, "b": "two"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(summary(&e), "gw-1: vendor.thing_happened a=1 b=two");
        let bare = SecurityEvent::new("gw-1", EventType::FirmwareChanged).station("s");
        assert_eq!(summary(&bare), "s: firmware ?");
    }

    #[test]
    fn hostile_data_is_bounded_and_free_of_control_characters() {
        let long = "<script>alert(1)</script>".repeat(400);
        let e = SecurityEvent::new("gw-1", EventType::SetpointChanged)
            .station("x\n\u{7}y")
            .data("tag", long.clone())
            .data("value", json!({"nested": [long.clone()]}))
            .data("previous", "\u{0}\r\n");
        let line = summary(&e);
        assert!(line.chars().count() <= MAX_LINE, "{}", line.len());
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    #[test]
    fn the_collector_s_reports_name_the_gateway_they_are_about() {
        let mut e = SecurityEvent::new("collector-1", EventType::SecurityViolation)
            .data("kind", "seq_gap")
            .data("reason", "3 events never arrived");
        e.event_data.insert(SOURCE_GATEWAY.into(), "gw-7".into());
        assert_eq!(
            summary(&e),
            "gw-7: integrity violation seq_gap: 3 events never arrived"
        );
    }

    #[test]
    fn every_technique_of_the_catalogue_has_a_name_a_tactic_and_a_link() {
        for entry in CATALOG {
            for id in entry.attack {
                let t =
                    technique(id).unwrap_or_else(|| panic!("{id} of {} unnamed", entry.event_type));
                assert!(!t.name.is_empty() && !t.tactics.is_empty());
                assert!(t.tactics.iter().all(|x| TACTICS.contains(x)), "{id}");
                assert_eq!(
                    t.url(),
                    format!("https://attack.mitre.org/techniques/{id}/")
                );
            }
        }
        let v = techniques("firmware.changed", &Map::new());
        assert_eq!(v[0]["name"], "System Firmware");
        let data = json!({"attack": ["T0856", "T9999"]});
        let v = techniques(
            "security.violation",
            data.as_object().unwrap_or(&Map::new()),
        );
        assert_eq!(v[0]["id"], "T0856");
        assert_eq!(v[1]["name"], Value::Null);
    }
}
