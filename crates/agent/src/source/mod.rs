//! Acquisition: where a reading enters. Station protocols (Modbus TCP/RTU, OPC UA) and the
//! built-in generator all yield [`Reading`]s for the rules stage.

pub mod generator;
pub mod modbus;
pub mod opcua;
mod profile;
pub mod reserved;
mod station;
pub mod tag;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use linesentry_event::Timestamp;

pub use profile::{Limits, Profile, Protocol, TagSpec};
pub use station::{
    OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, Parity, SourceConfig, SourceTuning,
    StationConfig,
};
pub use tag::{ByteOrder, DataType, ModbusAddress, RegisterArea, TagRole};

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

/// A station's source of readings, whatever its protocol. The agent polls it on the
/// station's interval; every protocol bounds each device call with the station's timeout.
#[derive(Debug)]
#[non_exhaustive]
pub enum Source {
    /// The built-in generator (`source = "simulated"`).
    Simulated(generator::Generator),
    /// A Modbus TCP device (`source = "modbus_tcp"`).
    ModbusTcp(modbus::TcpStation),
    /// A Modbus RTU unit on a serial bus shared through its arbiter (`source = "modbus_rtu"`).
    ModbusRtu(modbus::RtuStation),
    /// An OPC UA server (`source = "opcua"`), built with [`opcua::OpcUaSource::start`]: it
    /// needs the agent's data dir (PKI) and gateway id, which `for_station` does not get.
    OpcUa(opcua::OpcUaSource),
}

/// What building a source needs beyond the station itself.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The agent's data directory (the OPC UA PKI lives in `<data_dir>/pki`).
    pub data_dir: std::path::PathBuf,
    pub gateway_id: String,
    /// Seed of the built-in generator's randomness.
    pub seed: u64,
}

impl Source {
    /// The source for one configured station.
    pub fn for_station(station: &StationConfig, ctx: &SourceContext) -> Result<Self, SourceError> {
        match &station.source {
            SourceConfig::Simulated => Ok(Source::Simulated(generator::Generator::new(
                &station.id,
                &station.profile,
                ctx.seed,
            ))),
            SourceConfig::ModbusTcp { .. } => {
                modbus::TcpStation::new(station).map(Source::ModbusTcp)
            }
            SourceConfig::ModbusRtu { .. } => {
                modbus::RtuStation::new(station).map(Source::ModbusRtu)
            }
            SourceConfig::OpcUa { acquisition, .. } => {
                let mut settings = opcua::OpcUaSettings::new(&ctx.data_dir, &ctx.gateway_id);
                settings.acquisition = *acquisition;
                settings.queue_size = station.tuning.queue_size;
                settings.watchdog_intervals = station.tuning.watchdog_intervals;
                settings.reconnect_initial = station.tuning.reconnect_initial;
                settings.reconnect_max = station.tuning.reconnect_max;
                settings.deadbands = station
                    .profile
                    .tags
                    .iter()
                    .filter_map(|t| t.server_deadband.map(|d| (t.name.clone(), d)))
                    .collect();
                opcua::OpcUaSource::start(station, settings).map(Source::OpcUa)
            }
        }
    }

    /// One poll: readings plus what failed.
    pub async fn poll(&mut self) -> PollResult {
        match self {
            Source::Simulated(g) => PollResult {
                readings: g.sample(linesentry_event::Timestamp::now()),
                reachable: true,
                ..PollResult::default()
            },
            Source::ModbusTcp(station) => station.poll().await,
            Source::ModbusRtu(station) => station.poll().await,
            Source::OpcUa(station) => station.poll().await,
        }
    }
}
