//! Elastic Common Schema JSON, `ecs.version` pinned to [`VERSION`].
//!
//! `@timestamp` (event time, RFC 3339 UTC, microseconds); `event.kind` (`alert` for
//! detections, `event` otherwise), `event.category` / `event.type` per family (table in
//! `docs/SIEM.md`), `event.action` = event_type, `event.code` = class id, `event.id` =
//! event id, `event.severity` = the CEF number, `event.sequence` = seq, `event.outcome`
//! for authentication and API events, `event.provider` = the program that made it;
//! `log.level` = severity name; `message` = title; `observer` = the exporting linesentry
//! (`hostname` = [`Exporter::host`], vendor, product, version, type `sensor`); `host` = the
//! gateway; `threat.framework` `MITRE ATT&CK`, `threat.technique.id/name`,
//! `threat.tactic.id/name`; `labels` (strings): `gateway`, `station`, `seq`, `chain`,
//! `correlation_id`; `user.id`, `source.ip`; and the custom field set `linesentry` with
//! `event_data`, `context`, `prev_hash`, `signature`.

use serde_json::{json, Value};

use crate::classes::Family;
use crate::model::{Described, Exporter, Provenance, PRODUCT, VENDOR};
use crate::{attack, severity};
use linesentry_event::{EventType, SecurityEvent};

/// The pinned ECS version.
pub const VERSION: &str = "8.17.0";

/// `event.kind`, `event.category` and `event.type` of a family.
pub fn categorisation(
    family: Family,
    event_type: Option<EventType>,
) -> (&'static str, &'static str, &'static str) {
    match family {
        Family::Detection => ("alert", "intrusion_detection", "indicator"),
        Family::StateChange => ("event", "configuration", "change"),
        Family::Telemetry => ("event", "host", "info"),
        Family::Authentication => match event_type {
            Some(EventType::UserLogout) => ("event", "authentication", "end"),
            _ => ("event", "authentication", "start"),
        },
        Family::Health => match event_type {
            Some(EventType::AgentStarted | EventType::CollectorStarted) => {
                ("event", "process", "start")
            }
            Some(EventType::AgentStopped) => ("event", "process", "end"),
            Some(EventType::AgentConfigChanged) => ("event", "configuration", "change"),
            _ => ("event", "host", "info"),
        },
        Family::ApiAudit => ("event", "web", "access"),
    }
}

/// The ECS JSON object of `event`.
pub fn to_value(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> Value {
    let d = Described::new(event);
    let (kind, category, etype) = categorisation(d.family, event.kind());
    let mut ev = json!({
        "kind": kind,
        "category": [category],
        "type": [etype],
        "action": event.event_type,
        "code": d.class_id.to_string(),
        "id": event.id.to_string(),
        "severity": severity::cef(event.severity),
        "sequence": event.seq,
        "provider": d.origin.map_or("linesentry", |o| o.as_str()),
        "module": "linesentry",
        "dataset": "linesentry.events",
    });
    if let Some(outcome) = outcome(&d) {
        ev["outcome"] = outcome.into();
    }
    let mut labels = json!({
        "gateway": event.gateway_id,
        "seq": event.seq.to_string(),
        "chain": provenance.chain.as_str(),
    });
    if let Some(s) = &event.station_id {
        labels["station"] = s.as_str().into();
    }
    if let Some(c) = event.correlation_id {
        labels["correlation_id"] = c.to_string().into();
    }
    let mut custom = json!({
        "event_data": event.event_data,
        "context": event.context,
        "prev_hash": event.prev_hash,
    });
    if let Some(s) = &provenance.signature {
        custom["signature"] = json!({"key_id": s.key_id, "signature": s.signature});
    }
    let mut o = json!({
        "@timestamp": event.timestamp.to_string(),
        "ecs": {"version": VERSION},
        "event": ev,
        "log": {"level": event.severity.as_str()},
        "message": d.title,
        "observer": {
            "hostname": exporter.host,
            "vendor": VENDOR,
            "product": PRODUCT,
            "version": exporter.product_version,
            "type": "sensor",
        },
        "host": {"hostname": event.gateway_id, "name": event.gateway_id},
        "labels": labels,
        "linesentry": custom,
    });
    if !d.attack.is_empty() {
        let names: Vec<&str> = d
            .attack
            .iter()
            .map(|id| attack::technique(id).map_or("", |t| t.name))
            .collect();
        let mut tactic_ids: Vec<&str> = Vec::new();
        let mut tactic_names: Vec<&str> = Vec::new();
        for t in d.attack.iter().filter_map(|id| attack::technique(id)) {
            if !tactic_ids.contains(&t.tactic_id) {
                tactic_ids.push(t.tactic_id);
                tactic_names.push(t.tactic);
            }
        }
        o["threat"] = json!({
            "framework": "MITRE ATT&CK",
            "technique": {"id": d.attack, "name": names},
            "tactic": {"id": tactic_ids, "name": tactic_names},
        });
    }
    if let Some(u) = &event.user_id {
        o["user"] = json!({"id": u});
    }
    if let Some(ip) = event.source_ip {
        o["source"] = json!({"ip": ip.to_string()});
    }
    o
}

/// The ECS JSON text of `event`.
pub fn encode(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> String {
    to_value(event, exporter, provenance).to_string()
}

fn outcome(d: &Described<'_>) -> Option<&'static str> {
    match d.family {
        Family::Authentication => Some(if d.event.is(EventType::AuthFailed) {
            "failure"
        } else {
            "success"
        }),
        Family::ApiAudit => d
            .event
            .event_data
            .get("status")
            .and_then(Value::as_u64)
            .map(|s| if s < 400 { "success" } else { "failure" }),
        _ => None,
    }
}
