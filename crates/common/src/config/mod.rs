//! Configuration errors as the user sees them, for the agent's and the collector's TOML
//! files: `{file}:{line}: `{key.path}`: {message}`, every problem of a load at once.
//!
//! - [`ConfigError`] / [`ConfigErrors`]: one problem, and every problem of one load.
//! - [`spans`]: key paths (`stations[2].identity.kind`) and the line each sits on, found
//!   through a `toml_edit` document of the same text (values come from `toml::Value`, which
//!   carries no positions).
//! - [`Report`]: collects the errors of one file, giving each its line; deserialises a
//!   section with serde and reports an error at the exact key serde stopped at, reworded by
//!   [`humanize`].
//!
//! What the keys mean, their ranges and defaults stay with each product's own config.

mod error;
mod report;
pub mod spans;

pub use error::{humanize, no_hint, ConfigError, ConfigErrors, RequiredHint};
pub use report::{is_ident, type_name, Report};
