//! Acquisition: where a reading enters. Station protocols (Modbus TCP/RTU, OPC UA) and the
//! built-in generator all yield [`Reading`]s for the rules stage.
//!
//! A station's settings are this module's: [`StationConfig`] with its [`SourceTuning`], and
//! the [`Profile`] it names (tags, plus the rules' per-profile settings); `config` builds them.

pub mod generator;
pub mod modbus;
pub mod opcua;
mod profile;
mod station;
pub mod tag;

pub use profile::{Limits, Profile, Protocol, TagSpec};
pub use station::{
    OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, Parity, SourceConfig, SourceTuning,
    StationConfig,
};
pub use tag::{ByteOrder, DataType, ModbusAddress, RegisterArea};
// The reading model every source produces, kept in `crate::reading` so that the rules
// stage can consume it without depending on the sources.
pub use crate::reading::{
    reserved, DeviceIdentity, PollResult, Quality, Reading, SourceError, TagRole, Value,
};

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
