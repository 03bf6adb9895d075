//! The agent crate's integration tests, one binary: each module was a test file of its own.
//! They talk to real peers over real sockets (pymodbus, asyncua, an HTTPS endpoint) and
//! start no program of the workspace; tests/it at the top runs the programs.

/// The repository's top directory, as a literal for `concat!`.
macro_rules! repo {
    () => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
    };
}

mod config_errors;
mod forward_https;
mod health;
mod health_config;
mod modbus_faults;
mod modbus_interop;
mod modbus_rtu_interop;
mod modbus_scan;
mod opcua_interop;
mod parity;
mod queue_crash;
mod queue_disk_full;
mod queue_model;
mod rules_benign;
mod scenarios_agent;
mod support;
