//! Harnesses of the agent's own tests: an HTTPS ingest endpoint that verifies batches, and
//! Modbus devices (tokio-modbus servers, the pymodbus peer) with their point tables.

pub mod https_server;
pub mod modbus_common;
pub mod modbus_points;

use std::sync::Arc;

use linesentry_agent::rules::StationRules;
use linesentry_agent::runtime::rule_tags;
use linesentry_agent::source::StationConfig;
use linesentry_event::SeverityMap;

/// A station's rules as its station task builds them: the profile's tags and rule settings,
/// the catalogue's severities.
pub(crate) fn rules_for(gateway: &str, station: &StationConfig) -> StationRules {
    StationRules::new(
        Arc::from(gateway),
        Arc::from(station.id.as_str()),
        Arc::new(SeverityMap::default()),
        rule_tags(&station.profile),
    )
    .with_settings(station.rule_settings())
}
