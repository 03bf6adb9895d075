//! linesentry: an edge agent that turns factory-floor station readings into security events.
//!
//! The folders follow the data flow: a reading enters in [`source`], becomes an event in
//! [`rules`], is made durable in [`buffer`] and leaves in [`forward`]. [`agent`] wires them
//! together. [`event`] is the model every stage (and the central collector) shares;
//! [`config`] turns TOML files into validated settings; [`health`] serves the agent's own
//! liveness and metrics and talks to systemd.

pub mod agent;
pub mod buffer;
pub mod collector;
pub mod config;
pub mod event;
pub mod forward;
pub mod health;
pub mod rules;
pub mod sim;
pub mod source;
