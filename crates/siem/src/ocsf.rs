//! OCSF JSON, pinned to schema version 1.8.0.
//!
//! Why 1.8.0 and not 1.9.0: the validators a SIEM team can run offline (the PyPI package
//! `ocsf-json-schema` 1.2.0, which the tests use) bundle compiled schemas up to 1.8.0, and
//! the tools downstream lag further; an event claiming 1.9.0 could not be checked against
//! its official schema here. 1.9's `record_integrity` profile and `attestation` object
//! would be the better home for the chain; until we move, the integrity fields go where
//! 1.8 has room (below).
//!
//! Class per [`Family`] ([`class_for`]): Detection -> Detection Finding (2004, activity
//! Create) with `finding_info` (`uid` = event id, `title`, `types` = `[event_type]`,
//! `analytic` = the rule, `attacks` = ATT&CK for ICS technique and primary tactic);
//! StateChange and Telemetry -> Device Config State Change (5019, activity Log);
//! Authentication -> Authentication (3002; `user.login`/`auth.failed` Logon, `user.logout`
//! Logoff; `auth.failed` status Failure); Health -> Event Log Activity (1008; Start for
//! `*.started`, Stop for `agent.stopped`, Delete for `agent.buffer_dropped`, Clear for
//! `agent.buffer_reset`, Other otherwise); ApiAudit -> API Activity (6003). An event type
//! this build does not know is a Detection Finding.
//!
//! Every event: `type_uid` = `class_uid` x 100 + `activity_id`; `severity_id` from
//! [`crate::severity::ocsf`]; `time` in ms; `metadata.product` (name, vendor_name,
//! version), `metadata.uid` = event id, `metadata.event_code` = event_type,
//! `metadata.sequence` = seq (1.8's place for an ordering number),
//! `metadata.correlation_uid`; `metadata.profiles` = `["host"]`, the profile that gives
//! Authentication and API Activity their `device`; `device` = the gateway (`hostname`, `type_id` 7 IOT; a
//! collector's own event: its id, `type_id` 1 Server). What 1.8 has no attribute for goes
//! in `unmapped.linesentry`: `gateway_id`, `station_id`, `seq`, `prev_hash`, `chain` (the
//! verdict), `signature` (`key_id`, `signature`), `attack` (ids, also for classes without
//! `attacks`), `event_data`, `context`.

use serde_json::{json, Map, Value};

use crate::classes::Family;
use crate::model::{Described, Exporter, Provenance, PRODUCT, VENDOR};
use crate::{attack, severity};
use linesentry_event::{EventType, SecurityEvent};

/// The pinned OCSF schema version.
pub const VERSION: &str = "1.8.0";

/// An OCSF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcsfClass {
    pub uid: u32,
    pub name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
}

pub const DETECTION_FINDING: OcsfClass = OcsfClass {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
pub const DEVICE_CONFIG_STATE_CHANGE: OcsfClass = OcsfClass {
    uid: 5019,
    name: "Device Config State Change",
    category_uid: 5,
    category_name: "Discovery",
};
pub const AUTHENTICATION: OcsfClass = OcsfClass {
    uid: 3002,
    name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
pub const EVENT_LOG_ACTIVITY: OcsfClass = OcsfClass {
    uid: 1008,
    name: "Event Log Activity",
    category_uid: 1,
    category_name: "System Activity",
};
pub const API_ACTIVITY: OcsfClass = OcsfClass {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};

/// The OCSF class of a family.
pub fn class_for(family: Family) -> OcsfClass {
    match family {
        Family::Detection => DETECTION_FINDING,
        Family::StateChange | Family::Telemetry => DEVICE_CONFIG_STATE_CHANGE,
        Family::Authentication => AUTHENTICATION,
        Family::Health => EVENT_LOG_ACTIVITY,
        Family::ApiAudit => API_ACTIVITY,
    }
}

/// The OCSF JSON object of `event`.
pub fn to_value(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> Value {
    let d = Described::new(event);
    let class = class_for(d.family);
    let (activity_id, activity_name) = activity(&d);
    let (severity_id, severity_name) = severity::ocsf(event.severity);
    let mut metadata = json!({
        "version": VERSION,
        "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": exporter.product_version},
        "uid": event.id.to_string(),
        "event_code": event.event_type,
        "sequence": event.seq,
        "log_name": "linesentry",
        "profiles": ["host"],
    });
    if let Some(c) = event.correlation_id {
        metadata["correlation_uid"] = c.to_string().into();
    }
    let device = if d.is_collectors() {
        json!({"hostname": event.gateway_id, "uid": event.gateway_id, "type_id": 1, "type": "Server"})
    } else {
        json!({"hostname": event.gateway_id, "uid": event.gateway_id, "type_id": 7, "type": "IOT"})
    };
    let mut o = json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": u64::from(class.uid) * 100 + u64::from(activity_id),
        "type_name": format!("{}: {}", class.name, activity_name),
        "severity_id": severity_id,
        "severity": severity_name,
        "time": d.time_ms(),
        "message": d.title,
        "metadata": metadata,
        "device": device,
        "unmapped": {"linesentry": unmapped(&d, provenance)},
    });
    let Some(obj) = o.as_object_mut() else {
        return o;
    };
    match d.family {
        Family::Detection => detection(obj, &d),
        Family::StateChange | Family::Telemetry => {}
        Family::Authentication => authentication(obj, &d),
        Family::Health => {
            let provider = d.origin.map_or("linesentry", |o| o.as_str());
            obj.insert("log_provider".into(), provider.into());
            obj.insert("log_type_id".into(), 2.into());
            obj.insert("log_type".into(), "Application".into());
        }
        Family::ApiAudit => api(obj, &d),
    }
    o
}

/// The OCSF JSON text of `event`.
pub fn encode(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> String {
    to_value(event, exporter, provenance).to_string()
}

fn activity(d: &Described<'_>) -> (u8, &'static str) {
    let kind = d.event.kind();
    match d.family {
        Family::Detection => (1, "Create"),
        Family::StateChange | Family::Telemetry => (1, "Log"),
        Family::Authentication => match kind {
            Some(EventType::UserLogout) => (2, "Logoff"),
            _ => (1, "Logon"),
        },
        Family::Health => match kind {
            Some(EventType::AgentStarted | EventType::CollectorStarted) => (6, "Start"),
            Some(EventType::AgentStopped) => (7, "Stop"),
            Some(EventType::AgentBufferDropped) => (2, "Delete"),
            Some(EventType::AgentBufferReset) => (1, "Clear"),
            _ => (99, "Other"),
        },
        Family::ApiAudit => match d.event.event_data.get("method").and_then(Value::as_str) {
            Some("POST") => (1, "Create"),
            Some("GET" | "HEAD") => (2, "Read"),
            Some("PUT" | "PATCH") => (3, "Update"),
            Some("DELETE") => (4, "Delete"),
            _ => (99, "Other"),
        },
    }
}

fn detection(obj: &mut Map<String, Value>, d: &Described<'_>) {
    let attacks: Vec<Value> = d
        .attack
        .iter()
        .map(|id| match attack::technique(id) {
            Some(t) => json!({
                "technique": {"uid": t.id, "name": t.name},
                "tactic": {"uid": t.tactic_id, "name": t.tactic},
                "version": attack::MATRIX_VERSION,
            }),
            None => json!({"technique": {"uid": id}}),
        })
        .collect();
    let mut info = json!({
        "uid": d.event.id.to_string(),
        "title": d.title,
        "types": [d.event.event_type],
        "analytic": {"type_id": 1, "type": "Rule", "name": d.event.event_type, "uid": d.class_id.to_string()},
        "created_time": d.time_ms(),
    });
    if !attacks.is_empty() {
        info["attacks"] = attacks.into();
    }
    obj.insert("finding_info".into(), info);
    obj.insert("status_id".into(), 1.into());
    obj.insert("status".into(), "New".into());
}

fn authentication(obj: &mut Map<String, Value>, d: &Described<'_>) {
    let e = d.event;
    let user = match &e.user_id {
        Some(u) => json!({"uid": u, "name": u}),
        None => json!({"name": "unknown", "type_id": 0, "type": "Unknown"}),
    };
    obj.insert("user".into(), user);
    let target = e.station_id.as_deref().unwrap_or(&e.gateway_id);
    obj.insert("dst_endpoint".into(), json!({"name": target}));
    if let Some(ip) = e.source_ip {
        obj.insert("src_endpoint".into(), json!({"ip": ip.to_string()}));
    }
    let failed = e.is(EventType::AuthFailed);
    obj.insert("status_id".into(), if failed { 2 } else { 1 }.into());
    obj.insert(
        "status".into(),
        if failed { "Failure" } else { "Success" }.into(),
    );
}

fn api(obj: &mut Map<String, Value>, d: &Described<'_>) {
    let e = d.event;
    let data = &e.event_data;
    let method = data
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let actor = match &e.user_id {
        Some(u) => json!({"user": {"uid": u, "name": u}}),
        None => json!({"app_name": "anonymous"}),
    };
    obj.insert("actor".into(), actor);
    let mut api = json!({"operation": method, "service": {"name": "linesentry-collector"}});
    if let Some(status) = data.get("status").and_then(Value::as_u64) {
        api["response"] = json!({"code": status});
        obj.insert("status_id".into(), if status < 400 { 1 } else { 2 }.into());
        obj.insert("status_code".into(), status.to_string().into());
    }
    obj.insert("api".into(), api);
    let src = match e.source_ip {
        Some(ip) => json!({"ip": ip.to_string()}),
        None => json!({"name": "unknown"}),
    };
    obj.insert("src_endpoint".into(), src);
    if let Some(path) = data.get("path").and_then(Value::as_str) {
        obj.insert(
            "http_request".into(),
            json!({"http_method": method, "url": {"path": path}}),
        );
    }
}

fn unmapped(d: &Described<'_>, provenance: &Provenance) -> Value {
    let e = d.event;
    let mut u = json!({
        "gateway_id": e.gateway_id,
        "station_id": e.station_id,
        "seq": e.seq,
        "prev_hash": e.prev_hash,
        "chain": provenance.chain.as_str(),
        "class_id": d.class_id,
        "attack": d.attack,
        "event_data": e.event_data,
        "context": e.context,
    });
    if let Some(s) = &provenance.signature {
        u["signature"] =
            json!({"key_id": s.key_id, "signature": s.signature, "algorithm": "Ed25519"});
    }
    if let Some(user) = &e.user_id {
        u["user_id"] = user.as_str().into();
    }
    if let Some(ip) = e.source_ip {
        u["source_ip"] = ip.to_string().into();
    }
    u
}
