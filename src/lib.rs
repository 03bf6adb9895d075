//! linesentry: the command-line programs of the gateway agent (`linesentry`) and the central
//! collector (`linesentry-collector`).
//!
//! The code lives in the workspace's crates (ARCHITECTURE.md): `linesentry-event` (the event
//! model both products share), `linesentry-agent` (source -> rules -> buffer -> forward),
//! `linesentry-sim` (simulated stations, feature `sim`) and `linesentry-collector` (feature
//! `collector`). This library re-exports them under their old module names for the
//! integration tests in `tests/` until those move to the crates' own test binaries.

pub use linesentry_agent::{buffer, config, forward, health, rules, runtime as agent, source};
#[cfg(feature = "collector")]
pub use linesentry_collector as collector;
pub use linesentry_event as event;
#[cfg(feature = "sim")]
pub use linesentry_sim as sim;
