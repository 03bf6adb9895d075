//! linesentry: an edge agent that turns factory-floor station readings into security events.
//!
//! The folders follow the data flow: a reading enters in [`source`], becomes an event in
//! [`rules`], is made durable in [`buffer`] and leaves in [`forward`]. [`agent`] wires them
//! together. [`event`] is the model every stage (and the central collector) shares;
//! [`config`] turns TOML files into validated settings; [`health`] serves the agent's own
//! liveness and metrics and talks to systemd.
//!
//! `sim` (feature `sim`) serves simulated stations for the demo and the tests;
//! `collector` (feature `collector`) is the central collector. Both are in the default
//! features and left out of the agent built for gateways (Cargo.toml, `[features]`).

pub mod agent;
pub mod buffer;
#[cfg(feature = "collector")]
pub mod collector;
pub mod config;
pub mod event;
pub mod forward;
pub mod health;
pub mod rules;
#[cfg(feature = "sim")]
pub mod sim;
pub mod source;
