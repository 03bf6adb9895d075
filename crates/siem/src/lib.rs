//! SIEM encoders: a [`linesentry_event::SecurityEvent`] as the formats security teams' tools already parse.
//!
//! - [`cef`]: ArcSight CEF:0 lines;
//! - [`leef`]: QRadar LEEF 2.0 lines;
//! - [`syslog`]: RFC 5424 framing around any of the bodies, RFC 6587 / 5425 octet
//!   counting and LF framing, the size limit and its truncation rule;
//! - [`ocsf`]: OCSF 1.8.0 JSON (Detection Finding, Device Config State Change,
//!   Authentication, Event Log Activity, API Activity);
//! - [`ecs`]: Elastic Common Schema JSON;
//! - [`Format`]: the body formats by name (`cef`, `leef`, `ocsf`, `ecs`), one entry point;
//! - `transport` (feature `transport`, the only I/O here): syslog over TLS (RFC 5425), RELP,
//!   JSON batches over HTTPS, plain TCP/UDP to loopback, with timeouts and TLS verification.
//!
//! Pure code: no I/O, no clock, no runtime, so the agent and the collector share it and it
//! is tested without sockets. Every encoder takes the event, the [`Exporter`] (who is
//! sending: product version, host) and the event's [`Provenance`] (chain verdict, batch
//! signature), and never panics: any text is escaped into a correct encoding, and what
//! cannot be encoded is an [`EncodeError`]. The published dictionary (class ids, severity
//! and field mappings) is `docs/SIEM.md`; [`classes`] is its source.

pub mod attack;
pub mod cef;
pub mod classes;
pub mod dictionary;
pub mod ecs;
mod format;
pub mod leef;
mod model;
pub mod ocsf;
pub mod severity;
pub mod syslog;
#[cfg(feature = "transport")]
pub mod transport;

pub use classes::{class_of, Class, Family, Origin, UNKNOWN_CLASS_ID};
pub use format::{Format, UnknownFormat};
pub use model::{BatchSignature, Chain, EncodeError, Exporter, Provenance, PRODUCT, VENDOR};
