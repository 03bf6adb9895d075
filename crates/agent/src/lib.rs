//! The linesentry gateway agent.
//!
//! The folders follow the data flow: a reading enters in [`source`], becomes an event in
//! [`rules`], is made durable in [`buffer`] and leaves in [`forward`]. [`runtime`] wires them
//! together, one task per station. [`config`] turns TOML files into validated settings;
//! [`health`] serves the agent's own liveness and metrics and talks to systemd.
//! [`onboard`] is beside the data flow: the tools that write and check a station profile
//! before a station joins it (import a Modbus register map, discover an OPC UA server,
//! probe a profile against the live device).
//!
//! Each component owns the settings it runs on (`source::StationConfig`,
//! `forward::mqtt::MqttSettings`, `health::HealthSettings`, `buffer::QueueOptions`...) and
//! their defaults; `config` depends on the components, never the other way round. The
//! `Secret` several of them hold is `linesentry_common::Secret`; [`reading`] is the model a source yields and the
//! rules consume, so that `rules` need not depend on `source`. The event
//! model every stage shares with the central collector is the `linesentry-event` crate.

pub mod buffer;
pub mod config;
pub mod forward;
pub mod health;
pub mod onboard;
pub mod reading;
pub mod rules;
pub mod runtime;
pub mod source;
