//! Infrastructure the agent and the collector share, so each concern has one kit: retry
//! [`backoff`], PEM certificates and keys ([`pem`]), a value that never prints
//! ([`Secret`]), configuration errors that name file, line and key path ([`config`]), and
//! the accept loop of every listener that may speak TLS ([`accept`]), and
//! the one launcher of private Mosquitto and PostgreSQL servers for the collector's demo,
//! its benchmark and every crate's tests ([`local`]).
//! Nothing here knows about events, stations or databases, and nothing here depends on
//! another linesentry crate.

pub mod accept;
pub mod backoff;
pub mod config;
pub mod local;
pub mod pem;
pub mod secret;

pub use backoff::{Backoff, BackoffPolicy, Jitter};
pub use secret::Secret;
