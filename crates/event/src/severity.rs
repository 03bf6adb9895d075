//! Severity levels and the per-type severity map.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::EventType;

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

/// Default severity per event type ([`EventType::default_severity`]), with overrides from
/// configuration applied on top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeverityMap {
    overrides: BTreeMap<EventType, Severity>,
}

impl SeverityMap {
    pub fn with_overrides(overrides: BTreeMap<EventType, Severity>) -> Self {
        Self { overrides }
    }

    /// The override, else the type's default.
    pub fn severity_of(&self, event_type: EventType) -> Severity {
        self.overrides
            .get(&event_type)
            .copied()
            .unwrap_or_else(|| event_type.default_severity())
    }

    /// Whether configuration decides this type's severity (rules then keep their hands off).
    pub fn has_override(&self, event_type: EventType) -> bool {
        self.overrides.contains_key(&event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_defaults_hold_without_overrides() {
        let map = SeverityMap::default();
        assert_eq!(map.severity_of(EventType::UserLogin), Severity::Info);
        assert_eq!(map.severity_of(EventType::AccessDenied), Severity::Warn);
        assert_eq!(
            map.severity_of(EventType::SecurityViolation),
            Severity::Error
        );
        assert_eq!(
            map.severity_of(EventType::IdentityChanged),
            Severity::Critical
        );
    }

    #[test]
    fn an_override_wins_over_the_default() {
        let map = SeverityMap::with_overrides(BTreeMap::from([(
            EventType::SetpointChanged,
            Severity::Critical,
        )]));
        assert_eq!(
            map.severity_of(EventType::SetpointChanged),
            Severity::Critical
        );
        assert!(map.has_override(EventType::SetpointChanged));
        assert_eq!(map.severity_of(EventType::ModeChanged), Severity::Warn);
    }

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
