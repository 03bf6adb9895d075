//! Station profiles: what a kind of station exposes, tag by tag (`devices/*.toml`, read and
//! validated by `config`). Shared by every station that names the profile.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::modbus::DiagnosticsConfig;
use super::opcua::Deadband;
use super::{ByteOrder, DataType, ModbusAddress, TagRole};
use crate::rules::{RuleSettings, TagRules};

/// The protocol a profile's addresses are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Modbus,
    OpcUa,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Modbus => "modbus",
            Protocol::OpcUa => "opcua",
        })
    }
}

/// One validated station profile. Shared (`Arc`) by every station that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Equal to the file stem.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub protocol: Protocol,
    /// In file order; names are unique.
    pub tags: Vec<TagSpec>,
    /// Station-wide rule tuning from `[rules]` (defaults where not given). No change
    /// windows: those are per station (`StationConfig::change_windows`).
    pub rules: RuleSettings,
    /// Modbus only: the diagnostic counters to read (`[diagnostics]`); `None` reads none.
    pub diagnostics: Option<DiagnosticsConfig>,
}

impl Profile {
    pub fn tag(&self, name: &str) -> Option<&TagSpec> {
        self.tags.iter().find(|t| t.name == name)
    }
}

/// One tag of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    pub name: String,
    pub role: TagRole,
    pub data_type: DataType,
    /// `ABCD` unless given; only given for 32- and 64-bit Modbus types.
    pub order: ByteOrder,
    /// Registers of a Modbus string tag; 0 for every other tag (see [`TagSpec::registers`]).
    pub length: u16,
    /// Zero-based, whatever the profile's `addressing`; `Some` exactly for Modbus profiles.
    pub modbus: Option<ModbusAddress>,
    /// `Some` exactly for OPC UA profiles.
    pub node_id: Option<String>,
    /// Engineering value = raw * scale + offset (numeric types only).
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    /// Raw value -> name, for status and mode tags (required for integer ones).
    pub states: BTreeMap<i64, String>,
    pub limits: Option<Limits>,
    /// Per-tag rule tuning (deadband, heartbeat, debounce, stale time); `None`s fall back
    /// to the profile's [`Profile::rules`].
    pub rules: TagRules,
    /// OPC UA only: the data change filter the server applies to this tag's monitored item.
    pub server_deadband: Option<Deadband>,
}

impl TagSpec {
    /// 16-bit registers (or bits, in a bit area) one read of this tag covers.
    pub fn registers(&self) -> u16 {
        match self.data_type {
            DataType::String => self.length,
            other => other.registers(),
        }
    }

    /// The name `states` gives a raw value, if any.
    pub fn state_name(&self, raw: i64) -> Option<&str> {
        self.states.get(&raw).map(String::as_str)
    }
}

/// Engineering limits of a tag, `min < max`, both finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub min: f64,
    pub max: f64,
}

impl Limits {
    pub fn contains(&self, value: f64) -> bool {
        (self.min..=self.max).contains(&value)
    }
}
