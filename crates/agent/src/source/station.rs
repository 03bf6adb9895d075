//! One polled station: which profile, how to reach it, how often to poll it, how its source
//! acquires (`[[stations]]`, read and validated by `config`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::modbus::{PlanLimits, StationOptions};
use super::opcua::{self, Acquisition};
use super::Profile;
use crate::rules::{ChangeWindow, RuleSettings};
use linesentry_common::Secret;

/// One polled station.
#[derive(Debug, Clone, PartialEq)]
pub struct StationConfig {
    /// Unique within the configuration.
    pub id: String,
    pub profile: Arc<Profile>,
    pub source: SourceConfig,
    pub poll_interval: Duration,
    /// Deadline of one device request.
    pub timeout: Duration,
    pub enabled: bool,
    /// Authorised maintenance windows of this station (management-of-change tickets), in
    /// file order, each `start < end`.
    pub change_windows: Vec<ChangeWindow>,
    /// Coalescing, breaker, reconnect, identification and subscription settings; the
    /// defaults unless the station sets its source kind's keys.
    pub tuning: SourceTuning,
}

/// How a station's source acquires: the optional per-station keys of `[[stations]]`, with
/// the source modules' own defaults filled in ([`SourceTuning::defaults_for`]). Keys of
/// another source kind are refused, so the fields a source does not use keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceTuning {
    /// Modbus: `max_gap`, `max_read_registers`, `max_read_bits`.
    pub plan: PlanLimits,
    /// Modbus: `breaker_failures`, failed polls in a row that isolate the device.
    pub breaker_failures: u32,
    /// Modbus: `breaker_open_ms` / `breaker_open_max_ms`, first and longest isolation.
    pub breaker_open: Duration,
    pub breaker_open_max: Duration,
    /// Modbus: `identity_every_polls`; 0 reads FC 43/14 only on a new connection.
    pub identity_every: u32,
    /// Modbus TCP and OPC UA: `reconnect_initial_ms` / `reconnect_max_ms`. The initial
    /// default depends on the source (200 ms Modbus TCP, 500 ms OPC UA).
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// OPC UA: `queue_size` of every monitored item.
    pub queue_size: u32,
    /// OPC UA: `watchdog_intervals`, silent publishing intervals before the subscription is
    /// re-created.
    pub watchdog_intervals: u32,
}

impl SourceTuning {
    /// The defaults for a station of source `kind` (`"opcua"` has its own reconnect start).
    pub fn defaults_for(kind: &str) -> Self {
        let modbus = StationOptions::default();
        let is_opcua = kind == "opcua";
        SourceTuning {
            plan: modbus.limits,
            breaker_failures: modbus.breaker.failure_threshold,
            breaker_open: modbus.breaker.open.initial,
            breaker_open_max: modbus.breaker.open.max,
            identity_every: modbus.identity_every,
            reconnect_initial: if is_opcua {
                opcua::DEFAULT_RECONNECT_INITIAL
            } else {
                modbus.reconnect.initial
            },
            reconnect_max: if is_opcua {
                opcua::DEFAULT_RECONNECT_MAX
            } else {
                modbus.reconnect.max
            },
            queue_size: opcua::DEFAULT_QUEUE_SIZE,
            watchdog_intervals: opcua::DEFAULT_WATCHDOG_INTERVALS,
        }
    }
}

impl StationConfig {
    /// The rule settings of this station: its profile's `[rules]`, with the station's change
    /// windows added (the station's configuration, not the profile, knows its tickets).
    pub fn rule_settings(&self) -> RuleSettings {
        let mut settings = self.profile.rules.clone();
        settings
            .change_windows
            .extend(self.change_windows.iter().copied());
        settings
    }
}

/// How readings are obtained. The profile's protocol matches (any profile for `Simulated`).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// The built-in generator of plausible readings.
    Simulated,
    ModbusTcp {
        /// `host:port`, not resolved at load time.
        address: String,
        unit_id: u8,
    },
    ModbusRtu {
        device: PathBuf,
        baud: u32,
        parity: Parity,
        data_bits: u8,
        stop_bits: u8,
        unit_id: u8,
    },
    OpcUa {
        endpoint_url: String,
        security_mode: OpcUaSecurityMode,
        security_policy: OpcUaSecurityPolicy,
        identity: OpcUaIdentity,
        /// Subscriptions (default) or one Read per poll.
        acquisition: Acquisition,
    },
}

impl SourceConfig {
    /// The `source` name as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Simulated => "simulated",
            SourceConfig::ModbusTcp { .. } => "modbus_tcp",
            SourceConfig::ModbusRtu { .. } => "modbus_rtu",
            SourceConfig::OpcUa { .. } => "opcua",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// OPC UA MessageSecurityMode, spelt as in the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OpcUaSecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

/// OPC UA security policy, spelt as the last part of its URI (with or without underscores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OpcUaSecurityPolicy {
    None,
    Basic256Sha256,
    #[serde(alias = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(alias = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

/// The user identity an OPC UA session activates with.
#[derive(Debug, Clone, PartialEq)]
pub enum OpcUaIdentity {
    Anonymous,
    UserName { user: String, password: Secret },
    Certificate { cert: PathBuf, key: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tuning_defaults_are_the_sources_own_defaults() {
        let modbus = StationOptions::default();
        let tuning = SourceTuning::defaults_for("modbus_tcp");
        assert_eq!(tuning.plan, modbus.limits);
        assert_eq!(tuning.breaker_failures, modbus.breaker.failure_threshold);
        assert_eq!(tuning.breaker_open, modbus.breaker.open.initial);
        assert_eq!(tuning.breaker_open_max, modbus.breaker.open.max);
        assert_eq!(tuning.identity_every, modbus.identity_every);
        assert_eq!(tuning.reconnect_initial, modbus.reconnect.initial);
        assert_eq!(tuning.reconnect_max, modbus.reconnect.max);
        assert_eq!(StationOptions::from_tuning(&tuning), modbus);

        let settings = opcua::OpcUaSettings::new(std::path::Path::new("data"), "gw");
        let tuning = SourceTuning::defaults_for("opcua");
        assert_eq!(tuning.queue_size, settings.queue_size);
        assert_eq!(tuning.watchdog_intervals, settings.watchdog_intervals);
        assert!(tuning.watchdog_intervals > settings.keep_alive_count);
        assert_eq!(tuning.reconnect_initial, settings.reconnect_initial);
        assert_eq!(tuning.reconnect_max, settings.reconnect_max);
    }
}
