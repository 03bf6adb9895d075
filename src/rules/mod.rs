//! Rules: where a reading becomes an event. Pure and synchronous: no I/O, no clock reads
//! except the readings' own timestamps, so every rule is tested with plain values.
//!
//! One [`StationRules`] per station owns that station's state: the last value of each tag
//! and the baselines learned on first contact. The first value of a watched tag is the
//! baseline and raises nothing; later changes are compared with it. State is bounded by the
//! profile's tag count.
//!
//! This is the core set (status, fault, mode, setpoint, alarm limit, program, firmware,
//! quality); the rest of the catalogue builds on the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value as Json};
use uuid::Uuid;

use crate::event::{catalog_entry, SecurityEvent, Severity, SeverityMap};
use crate::source::{Quality, Reading, TagRole, Value};

/// What the rules need to know about one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTag {
    pub name: String,
    pub role: TagRole,
    pub unit: Option<String>,
    /// Raw value -> state name, for status and mode tags.
    pub states: BTreeMap<i64, String>,
    /// Engineering limits (min, max).
    pub limits: Option<(f64, f64)>,
}

/// Names of states that mean the equipment is in fault.
const FAULT_STATES: &[&str] = &[
    "fault",
    "error",
    "estop",
    "e-stop",
    "emergency_stop",
    "alarm",
];
/// Modes whose selection is an error rather than a warning (T0858).
const SEVERE_MODES: &[&str] = &["program", "stop", "download"];

/// Counters of conditions the rules saw but could not turn into a value (bad quality,
/// non-finite numbers, readings for unknown tags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    pub readings: u64,
    pub unknown_tag: u64,
    pub not_finite: u64,
    pub bad_quality: u64,
}

#[derive(Debug)]
pub struct StationRules {
    gateway_id: Arc<str>,
    station_id: Arc<str>,
    severities: Arc<SeverityMap>,
    tags: HashMap<String, RuleTag>,
    last: HashMap<String, Value>,
    /// Correlation id of the open fault, shared by the fault and its recovery.
    fault: Option<Uuid>,
    part_id: Option<Value>,
    /// Part id of the last quality check, so each new part gets its own check.
    checked_part: Option<Value>,
    counters: RuleCounters,
}

impl StationRules {
    pub fn new(
        gateway_id: Arc<str>,
        station_id: Arc<str>,
        severities: Arc<SeverityMap>,
        tags: Vec<RuleTag>,
    ) -> Self {
        Self {
            gateway_id,
            station_id,
            severities,
            tags: tags.into_iter().map(|t| (t.name.clone(), t)).collect(),
            last: HashMap::new(),
            fault: None,
            part_id: None,
            checked_part: None,
            counters: RuleCounters::default(),
        }
    }

    pub fn counters(&self) -> RuleCounters {
        self.counters
    }

    /// Evaluates one poll's readings and returns the events they raise. Part ids are taken
    /// first, so a quality result in the same poll refers to its own part.
    pub fn process(&mut self, readings: &[Reading]) -> Vec<SecurityEvent> {
        let mut out = Vec::new();
        let is_part = |r: &&Reading| {
            self.tags
                .get(r.tag.as_ref())
                .is_some_and(|t| t.role == TagRole::PartId)
        };
        let (parts, rest): (Vec<&Reading>, Vec<&Reading>) = readings.iter().partition(is_part);
        for r in parts.into_iter().chain(rest) {
            self.counters.readings += 1;
            let Some(tag) = self.tags.get(r.tag.as_ref()).cloned() else {
                self.counters.unknown_tag += 1;
                continue;
            };
            if r.quality != Quality::Good {
                self.counters.bad_quality += 1;
                continue;
            }
            if let Value::Float(f) = r.value {
                if !f.is_finite() {
                    self.counters.not_finite += 1;
                    continue;
                }
            }
            let previous = self.last.insert(tag.name.clone(), r.value.clone());
            self.evaluate(&tag, r, previous.as_ref(), &mut out);
        }
        out
    }

    fn evaluate(
        &mut self,
        tag: &RuleTag,
        r: &Reading,
        prev: Option<&Value>,
        out: &mut Vec<SecurityEvent>,
    ) {
        let changed = prev.is_some_and(|p| p != &r.value);
        match tag.role {
            TagRole::Status if prev.is_none() || changed => self.status(tag, r, prev, out),
            TagRole::Mode if changed => {
                let to = state_name(tag, &r.value);
                let severity = if SEVERE_MODES.contains(&to.to_ascii_lowercase().as_str()) {
                    Severity::Error
                } else {
                    self.default_severity("mode.changed")
                };
                out.push(
                    self.event("mode.changed", tag, r, prev)
                        .severity(severity)
                        .data("state", to)
                        .data(
                            "previous_state",
                            prev.map_or_else(String::new, |p| state_name(tag, p)),
                        ),
                );
            }
            TagRole::Setpoint => {
                if changed {
                    out.push(self.event("setpoint.changed", tag, r, prev));
                }
                // Outside the limits: once on first contact and once per new value.
                if let (Some((min, max)), Some(v)) = (tag.limits, r.value.as_f64()) {
                    if (v < min || v > max) && (prev.is_none() || changed) {
                        out.push(
                            self.event("setpoint.out_of_range", tag, r, prev)
                                .data("limit", json!({ "min": min, "max": max })),
                        );
                    }
                }
            }
            TagRole::AlarmLimit | TagRole::AlarmEnable if changed => {
                out.push(self.event("alarm_limit.changed", tag, r, prev));
                if tag.role == TagRole::AlarmEnable && r.value.as_f64() == Some(0.0) {
                    out.push(self.event("alarm.suppressed", tag, r, prev));
                }
            }
            TagRole::ProgramChecksum if changed => {
                out.push(self.event("program.changed", tag, r, prev));
            }
            TagRole::Firmware if changed => out.push(self.event("firmware.changed", tag, r, prev)),
            TagRole::PartId => self.part_id = Some(r.value.clone()),
            TagRole::QualityResult
                if prev.is_none() || changed || self.part_id != self.checked_part =>
            {
                self.checked_part.clone_from(&self.part_id);
                let pass = quality_pass(tag, &r.value);
                let mut e = self
                    .event("quality.check", tag, r, prev)
                    .data("result", if pass { "pass" } else { "fail" });
                if !pass {
                    e = e.severity(Severity::Warn.max(self.default_severity("quality.check")));
                }
                if let Some(part) = &self.part_id {
                    e = e.data("part_id", serde_json::to_value(part).unwrap_or(Json::Null));
                }
                out.push(e);
            }
            _ => {}
        }
    }

    fn status(
        &mut self,
        tag: &RuleTag,
        r: &Reading,
        prev: Option<&Value>,
        out: &mut Vec<SecurityEvent>,
    ) {
        let name = state_name(tag, &r.value);
        let is_fault = FAULT_STATES.contains(&name.to_ascii_lowercase().as_str());
        let mut status = self
            .event("equipment.status", tag, r, prev)
            .data("state", name.clone());
        if let Some(p) = prev {
            status = status.data("previous_state", state_name(tag, p));
        }
        match (is_fault, self.fault) {
            (true, None) => {
                let id = Uuid::now_v7();
                self.fault = Some(id);
                // The status sample that shows the fault carries the fault's severity.
                let severity = self.default_severity("equipment.fault");
                out.push(status.severity(severity).correlation(id));
                out.push(
                    self.event("equipment.fault", tag, r, prev)
                        .data("state", name)
                        .correlation(id),
                );
            }
            (false, Some(id)) => {
                self.fault = None;
                out.push(status.correlation(id).data("recovered", true));
            }
            _ => out.push(status),
        }
    }

    fn default_severity(&self, event_type: &str) -> Severity {
        self.severities.severity_of(event_type)
    }

    /// An event about `tag` with the reading that triggered it.
    fn event(
        &self,
        event_type: &str,
        tag: &RuleTag,
        r: &Reading,
        prev: Option<&Value>,
    ) -> SecurityEvent {
        let mut e = SecurityEvent::new(self.gateway_id.as_ref(), event_type)
            .at(r.received)
            .station(self.station_id.as_ref())
            .severity(self.default_severity(event_type))
            .data("tag", tag.name.clone())
            .data(
                "value",
                serde_json::to_value(&r.value).unwrap_or(Json::Null),
            )
            .context("source", "rules");
        if let Some(p) = prev {
            e = e.data("previous", serde_json::to_value(p).unwrap_or(Json::Null));
        }
        if let Some(unit) = &tag.unit {
            e = e.data("unit", unit.clone());
        }
        if let Some(entry) = catalog_entry(event_type) {
            if !entry.attack.is_empty() {
                e = e.data("attack", entry.attack.to_vec());
            }
        }
        e
    }
}

fn state_name(tag: &RuleTag, v: &Value) -> String {
    let raw = match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    raw.and_then(|r| tag.states.get(&r).cloned())
        .unwrap_or_else(|| v.to_string())
}

/// Pass when the verdict is true / a "pass"-like state, or a measurement within limits.
fn quality_pass(tag: &RuleTag, v: &Value) -> bool {
    if let Some((min, max)) = tag.limits {
        if let Some(x) = v.as_f64() {
            return (min..=max).contains(&x);
        }
    }
    match v {
        Value::Bool(b) => *b,
        Value::Text(t) => matches!(t.to_ascii_lowercase().as_str(), "pass" | "ok" | "good"),
        other => {
            let name = state_name(tag, other).to_ascii_lowercase();
            matches!(name.as_str(), "pass" | "ok" | "good")
        }
    }
}

#[cfg(test)]
mod tests;
