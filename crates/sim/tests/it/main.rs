//! The simulators' integration tests: each station profile served over Modbus TCP and OPC UA
//! and read back by the agent's clients.

/// The repository's top directory, as a literal for `concat!`.
macro_rules! repo {
    () => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
    };
}

mod opcua_restarts;
mod opcua_sim;
mod sim_modbus;
