//! Infrastructure the agent and the collector share, so each concern has one kit: retry
//! [`backoff`]. Nothing here knows about events, stations or databases.

pub mod backoff;

pub use backoff::{Backoff, BackoffPolicy, Jitter};
