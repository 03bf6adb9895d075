//! The body formats by name, for configuration (`format = "cef"`) and one entry point.

use std::fmt;
use std::str::FromStr;

use linesentry_event::SecurityEvent;

use crate::model::{Exporter, Provenance};
use crate::{cef, ecs, leef, ocsf};

/// A body format. Syslog framing ([`crate::syslog`]) goes around any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Cef,
    Leef,
    Ocsf,
    Ecs,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Cef, Format::Leef, Format::Ocsf, Format::Ecs];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cef => "cef",
            Format::Leef => "leef",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
        }
    }

    /// `event` in this format: one line, no line feed (JSON is compact).
    pub fn encode(
        self,
        event: &SecurityEvent,
        exporter: &Exporter,
        provenance: &Provenance,
    ) -> String {
        match self {
            Format::Cef => cef::encode(event, exporter, provenance),
            Format::Leef => leef::encode(event, exporter, provenance),
            Format::Ocsf => ocsf::encode(event, exporter, provenance),
            Format::Ecs => ecs::encode(event, exporter, provenance),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of `cef`, `leef`, `ocsf`, `ecs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SIEM format `{}`; expected one of cef, leef, ocsf, ecs", .0.escape_debug())]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::EventType;

    #[test]
    fn names_parse_back_and_unknown_ones_are_named_in_the_error() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        let err = "json".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("`json`"), "{err}");
    }

    #[test]
    fn every_format_gives_one_line() {
        let e = SecurityEvent::new("gw", EventType::AgentStarted).data("note", "a\nb");
        for f in Format::ALL {
            let text = f.encode(&e, &Exporter::new("host-1"), &Provenance::default());
            assert!(!text.contains('\n'), "{f}: {text}");
            assert!(!text.is_empty());
        }
    }
}
