//! Severity numbers per format (the table in `docs/SIEM.md`).

use linesentry_event::Severity;

/// CEF `Severity` (0-10), also LEEF `sev` (1-10) and ECS `event.severity`.
pub fn cef(s: Severity) -> u8 {
    match s {
        Severity::Debug => 1,
        Severity::Info => 3,
        Severity::Warn => 6,
        Severity::Error => 8,
        Severity::Critical => 10,
    }
}

/// RFC 5424 severity (0 emergency .. 7 debug).
pub fn syslog(s: Severity) -> u8 {
    match s {
        Severity::Debug => 7,
        Severity::Info => 6,
        Severity::Warn => 4,
        Severity::Error => 3,
        Severity::Critical => 2,
    }
}

/// OCSF `severity_id` and its caption (`severity`).
pub fn ocsf(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Debug | Severity::Info => (1, "Informational"),
        Severity::Warn => (3, "Medium"),
        Severity::Error => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_maps_are_monotonic_in_every_format() {
        for w in Severity::ALL.windows(2) {
            assert!(cef(w[0]) < cef(w[1]));
            assert!(syslog(w[0]) > syslog(w[1]));
            assert!(ocsf(w[0]).0 <= ocsf(w[1]).0);
        }
    }
}
