//! The reading model: what a source yields ([`PollResult`], [`Reading`], [`Value`],
//! [`Quality`], [`DeviceIdentity`], [`SourceError`]) and what the rules consume, with the
//! tags' [`TagRole`] and the [`reserved`] tag names of readings about the device itself.
//! Its own module, importing nothing of the crate, so that `rules` depends on it and not on
//! `source` (whose profiles carry the rules' settings).

pub mod reserved;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use linesentry_event::Timestamp;

/// A decoded tag value. Integers keep their signedness so nothing is rounded through f64.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as f64 for numeric comparisons (deadbands, limits); `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// OPC UA-style quality of a reading; Modbus readings are `Good` or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

/// Identity a device reports about itself: Modbus FC 43/14 objects, OPC UA BuildInfo and
/// application description. The baseline for `firmware.changed` / `identity.changed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeviceIdentity {
    pub vendor: Option<String>,
    pub product_code: Option<String>,
    /// Firmware / software revision.
    pub revision: Option<String>,
    pub product_name: Option<String>,
    /// OPC UA ApplicationUri.
    pub application_uri: Option<String>,
    /// SHA-1 thumbprint (hex) of the server certificate, where there is one.
    pub certificate_thumbprint: Option<String>,
}

/// Why (part of) a poll failed. Device exceptions are apart from link failures: a device
/// that answers "illegal address" is alive; one that times out may not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("device answered with exception {code:#04x} ({name}) for {what}")]
    Exception {
        code: u8,
        name: String,
        what: String,
    },
    #[error("response did not decode for {what}: {reason}")]
    Decode { what: String, reason: String },
    /// The device refused our credentials (OPC UA session rejected).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server certificate is untrusted, expired, not yet valid or for another host.
    #[error("certificate rejected: {0}")]
    Certificate(String),
    #[error("isolated after repeated failures; next attempt in {retry_in_ms} ms")]
    CircuitOpen { retry_in_ms: u64 },
    #[error("{0}")]
    Other(String),
}

/// What one poll of a station produced. Partial results are normal: a failed block or node
/// is listed in `errors` while the readings of the others are kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollResult {
    pub readings: Vec<Reading>,
    /// False when the device could not be reached at all this poll.
    pub reachable: bool,
    pub errors: Vec<SourceError>,
    /// Set when identity was (re)read this poll.
    pub identity: Option<DeviceIdentity>,
}

/// One sampled tag value of one station.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub station_id: Arc<str>,
    pub tag: Arc<str>,
    pub value: Value,
    pub quality: Quality,
    /// Time the device stamped the value, where the protocol carries one (OPC UA).
    pub source_time: Option<Timestamp>,
    /// Time the gateway received it.
    pub received: Timestamp,
}

/// What a tag means to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagRole {
    /// Machine state (run / idle / setup / fault), mapped through the tag's `states`.
    Status,
    /// Operating mode (RUN / PROGRAM / REMOTE / LOCAL).
    Mode,
    /// A watched setpoint: changes outside a change window are `setpoint.changed`.
    Setpoint,
    /// An alarm threshold.
    AlarmLimit,
    /// An alarm-enable bit.
    AlarmEnable,
    /// An alarm indication (alarm-active bit, common alarm output, beacon): non-zero while
    /// the station shows an alarm.
    AlarmActive,
    /// A quality verdict (pass / fail) or a measurement checked against spec limits.
    QualityResult,
    /// Part or panel id that quality results refer to.
    PartId,
    /// Program checksum or version.
    ProgramChecksum,
    /// Firmware revision readable as a tag.
    Firmware,
    /// Production or diagnostic counter.
    Counter,
    /// A process value (temperature, pressure, ...), reported by exception.
    Measurement,
    /// A maintenance key switch: while set, setpoint and mode changes are authorised.
    ChangeWindow,
}

impl fmt::Display for TagRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}
