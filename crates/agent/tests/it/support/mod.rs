//! Harnesses of the agent's own tests: an HTTPS ingest endpoint that verifies batches, and
//! Modbus devices (tokio-modbus servers, the pymodbus peer) with their point tables.

pub mod https_server;
pub mod modbus_common;
pub mod modbus_points;

pub(crate) use linesentry_agent::runtime::rules_for;
