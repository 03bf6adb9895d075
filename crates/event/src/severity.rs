//! Severity levels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The original design's levels plus `critical` for events that need a person now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Debug and info: telemetry, the class a full buffer gives up first.
    pub fn is_telemetry(self) -> bool {
        self <= Severity::Info
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown severity `{0}`; expected one of debug, info, warn, error, critical")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Debug < Severity::Critical);
        assert!(Severity::Info.is_telemetry() && !Severity::Warn.is_telemetry());
        assert_eq!("error".parse::<Severity>().unwrap(), Severity::Error);
        assert!("fatal"
            .parse::<Severity>()
            .unwrap_err()
            .to_string()
            .contains("fatal"));
    }
}
