//! The event model: the one thing the agent and the collector share.
//!
//! A [`SecurityEvent`] carries the fields of the original design's `security_events` table
//! (id, event_type, event_data, context, timestamp, correlation_id, user_id, source_ip,
//! severity) plus the edge fields `gateway_id`, `station_id`, `seq` and `prev_hash`.
//!
//! Two encodings, one struct:
//! - JSON on the wire (documented by `crates/event/schema/security-event.v1.json`), with `schema_version`.
//! - postcard in the durable queue. postcard is not self-describing, so the free-form JSON
//!   members (`event_data`, `context`) are stored as JSON text there; see [`json_map`].
//!
//! `seq` is 0 until the durable queue assigns it: the queue is the only place that knows the
//! next per-gateway sequence number, so an event gets its number in the same transaction that
//! makes it durable.

mod catalog;
pub mod integrity;
mod severity;
mod timestamp;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use catalog::{catalog_entry, CatalogEntry, EventType, SeverityMap, UnknownEventType, CATALOG};
pub use severity::{Severity, UnknownSeverity};
pub use timestamp::Timestamp;

/// Version of the JSON form. Bumped on any incompatible change to the wire shape.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest accepted `event_type`, `gateway_id`, `station_id` or `user_id`.
pub const MAX_NAME_LEN: usize = 128;

/// One security event, as stored, forwarded and ingested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    pub schema_version: u32,
    pub id: Uuid,
    /// Per-gateway sequence number, strictly increasing and never reused; 0 until queued.
    pub seq: u64,
    pub gateway_id: String,
    #[serde(default)]
    pub station_id: Option<String>,
    pub event_type: String,
    pub severity: Severity,
    pub timestamp: Timestamp,
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub source_ip: Option<IpAddr>,
    #[serde(with = "json_map")]
    pub event_data: Map<String, Value>,
    #[serde(with = "json_map")]
    pub context: Map<String, Value>,
    /// SHA-256 (hex) of the canonical JSON of this gateway's previous event; set by forwarding.
    #[serde(default)]
    pub prev_hash: Option<String>,
}

/// Why a JSON event was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("not a valid event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema_version {found}; this build reads version {SCHEMA_VERSION}")]
    SchemaVersion { found: u32 },
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

impl SecurityEvent {
    /// A new event of `event_type` from `gateway_id`, stamped now, with a fresh UUIDv7.
    /// The severity is the type's default; apply a [`SeverityMap`] to honour overrides.
    pub fn new(gateway_id: impl Into<String>, event_type: EventType) -> Self {
        Self::stamped(gateway_id, event_type, Timestamp::now())
    }

    /// [`SecurityEvent::new`] stamped `timestamp` (what [`SecurityEvent::at`] sets, without
    /// making an id for the current time first).
    pub fn stamped(
        gateway_id: impl Into<String>,
        event_type: EventType,
        timestamp: Timestamp,
    ) -> Self {
        let severity = event_type.default_severity();
        Self {
            schema_version: SCHEMA_VERSION,
            id: timestamp.uuid_v7(),
            seq: 0,
            gateway_id: gateway_id.into(),
            station_id: None,
            event_type: event_type.as_str().to_owned(),
            severity,
            timestamp,
            correlation_id: None,
            user_id: None,
            source_ip: None,
            event_data: Map::new(),
            context: Map::new(),
            prev_hash: None,
        }
    }

    /// The event's type, if it is one this build knows (a newer gateway may send others).
    pub fn kind(&self) -> Option<EventType> {
        EventType::from_name(&self.event_type)
    }

    /// Whether the event is of type `event_type`.
    pub fn is(&self, event_type: EventType) -> bool {
        self.event_type == event_type.as_str()
    }

    #[must_use]
    pub fn station(mut self, station_id: impl Into<String>) -> Self {
        self.station_id = Some(station_id.into());
        self
    }

    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    #[must_use]
    pub fn correlation(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    #[must_use]
    pub fn at(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = timestamp;
        self.id = timestamp.uuid_v7();
        self
    }

    /// Sets one member of `event_data`.
    #[must_use]
    pub fn data(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.event_data.insert(key.to_owned(), value.into());
        self
    }

    /// Sets one member of `context`.
    #[must_use]
    pub fn context(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_owned(), value.into());
        self
    }

    /// True for debug and info events: the class a full buffer evicts first.
    pub fn is_telemetry(&self) -> bool {
        self.severity.is_telemetry()
    }

    /// The JSON wire form.
    pub fn to_json(&self) -> String {
        // Serialising this struct to JSON cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks one event in its JSON wire form.
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        let event: Self = serde_json::from_str(text)?;
        event.check()?;
        Ok(event)
    }

    /// Checks what serde cannot: version, names, sizes.
    pub fn check(&self) -> Result<(), EventError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(EventError::SchemaVersion {
                found: self.schema_version,
            });
        }
        check_name("event_type", &self.event_type, true)?;
        check_name("gateway_id", &self.gateway_id, false)?;
        if let Some(station) = &self.station_id {
            check_name("station_id", station, false)?;
        }
        if let Some(user) = &self.user_id {
            if user.len() > MAX_NAME_LEN {
                return Err(EventError::Field {
                    field: "user_id",
                    reason: format!("longer than {MAX_NAME_LEN} bytes"),
                });
            }
        }
        if let Some(hash) = &self.prev_hash {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(EventError::Field {
                    field: "prev_hash",
                    reason: "expected 64 hex digits (SHA-256)".into(),
                });
            }
        }
        Ok(())
    }
}

/// The postcard form of `event` (what `postcard::to_extend(event, out)` appends), with
/// `event_data` and `context` given as JSON text already written: the durable queue has
/// their canonical JSON from the hash chain's parts, and serde_json's text of a map is that
/// same text (its maps keep their keys sorted). Decodes as a [`SecurityEvent`].
pub fn to_postcard_with_members(
    event: &SecurityEvent,
    event_data: &str,
    context: &str,
    out: Vec<u8>,
) -> postcard::Result<Vec<u8>> {
    /// [`SecurityEvent`]'s fields in its order (postcard is positional), the maps as text.
    #[derive(Serialize)]
    struct Stored<'a> {
        schema_version: u32,
        id: &'a Uuid,
        seq: u64,
        gateway_id: &'a str,
        station_id: &'a Option<String>,
        event_type: &'a str,
        severity: Severity,
        timestamp: Timestamp,
        correlation_id: &'a Option<Uuid>,
        user_id: &'a Option<String>,
        source_ip: &'a Option<IpAddr>,
        event_data: &'a str,
        context: &'a str,
        prev_hash: &'a Option<String>,
    }
    postcard::to_extend(
        &Stored {
            schema_version: event.schema_version,
            id: &event.id,
            seq: event.seq,
            gateway_id: &event.gateway_id,
            station_id: &event.station_id,
            event_type: &event.event_type,
            severity: event.severity,
            timestamp: event.timestamp,
            correlation_id: &event.correlation_id,
            user_id: &event.user_id,
            source_ip: &event.source_ip,
            event_data,
            context,
            prev_hash: &event.prev_hash,
        },
        out,
    )
}

/// `event_type` is dotted lower-case (`setpoint.changed`); ids are `[A-Za-z0-9._:-]`.
fn check_name(field: &'static str, value: &str, dotted: bool) -> Result<(), EventError> {
    let fail = |reason: &str| {
        Err(EventError::Field {
            field,
            reason: reason.to_owned(),
        })
    };
    if value.is_empty() {
        return fail("must not be empty");
    }
    if value.len() > MAX_NAME_LEN {
        return fail("longer than 128 bytes");
    }
    if dotted {
        let ok = value.split('.').count() >= 2
            && value.split('.').all(|part| {
                part.starts_with(|c: char| c.is_ascii_lowercase())
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !ok {
            return fail("expected dotted lower-case words such as `setpoint.changed`");
        }
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return fail("expected letters, digits and `.`, `_`, `-`, `:` only");
    }
    Ok(())
}

/// Optional fields are written as `null`, never skipped: postcard is positional.
///
/// Serde for a JSON object member: an object in human-readable formats (JSON), JSON text in
/// compact binary formats (postcard), which cannot carry a self-describing value.
mod json_map {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    pub(super) fn serialize<S: Serializer>(
        map: &Map<String, Value>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            map.serialize(s)
        } else {
            let text = serde_json::to_string(map).map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Map<String, Value>, D::Error> {
        if d.is_human_readable() {
            Map::deserialize(d)
        } else {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SecurityEvent {
        let mut e = SecurityEvent::new("gw-1", EventType::SetpointChanged)
            .station("press-01")
            .data("tag", "die_temp_sp")
            .data("value", 181.5)
            .data("previous", 175.0)
            .context("source", "modbus");
        e.seq = 42;
        e.source_ip = Some("10.0.0.5".parse().unwrap());
        e.user_id = Some("operator7".into());
        e.correlation_id = Some(Uuid::now_v7());
        e
    }

    #[test]
    fn postcard_round_trip_keeps_every_field() {
        let e = sample();
        let bytes = postcard::to_stdvec(&e).unwrap();
        let back: SecurityEvent = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn the_postcard_form_with_members_given_as_text_is_the_event_s_own() {
        let mut e = sample()
            .data(
                "nested",
                serde_json::json!({"z": [1, {"b": null, "a": "\u{1}"}], "a": 2.5}),
            )
            .context("zone", "b");
        e.prev_hash = Some("ab".repeat(32));
        let data = serde_json::to_string(&e.event_data).unwrap();
        let context = serde_json::to_string(&e.context).unwrap();
        let bytes = to_postcard_with_members(&e, &data, &context, vec![7]).unwrap();
        assert_eq!(bytes[0], 7, "appended to what was there");
        assert_eq!(bytes[1..], postcard::to_stdvec(&e).unwrap()[..]);
        let back: SecurityEvent = postcard::from_bytes(&bytes[1..]).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn json_round_trip_keeps_every_field_and_objects_stay_objects() {
        let e = sample();
        let text = e.to_json();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["event_data"].is_object());
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["severity"], "warn");
        assert_eq!(SecurityEvent::from_json(&text).unwrap(), e);
    }

    #[test]
    fn every_event_type_makes_a_valid_event() {
        for t in EventType::ALL {
            SecurityEvent::new("gw", *t).check().unwrap();
        }
    }

    #[test]
    fn new_events_take_the_catalogue_severity_and_a_v7_id() {
        let e = SecurityEvent::new("gw", EventType::IdentityChanged);
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.id.get_version_num(), 7);
        assert_eq!(
            SecurityEvent::new("gw", EventType::ApiAccess).severity,
            Severity::Debug
        );
    }

    #[test]
    fn wrong_schema_version_is_refused_with_the_version_named() {
        let mut v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["schema_version"] = 9.into();
        let err = SecurityEvent::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("schema_version 9"), "{err}");
    }

    #[test]
    fn bad_names_and_unknown_fields_are_refused() {
        let mut v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["event_type"] = "Setpoint Changed".into();
        let err = SecurityEvent::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("event_type"), "{err}");

        let mut v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["surprise"] = 1.into();
        assert!(SecurityEvent::from_json(&v.to_string()).is_err());
    }
}
