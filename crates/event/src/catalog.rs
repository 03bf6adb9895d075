//! The event catalogue of `docs/EVENTS.md`: every event type the agent emits, its default
//! severity and its ATT&CK for ICS / IEC 62443 references.

use super::Severity;

/// One row of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    pub event_type: &'static str,
    pub severity: Severity,
    /// MITRE ATT&CK for ICS technique ids, carried in `event_data.attack`.
    pub attack: &'static [&'static str],
    /// IEC 62443-3-3 system requirements.
    pub iec62443: &'static [&'static str],
}

const fn entry(
    event_type: &'static str,
    severity: Severity,
    attack: &'static [&'static str],
    iec62443: &'static [&'static str],
) -> CatalogEntry {
    CatalogEntry {
        event_type,
        severity,
        attack,
        iec62443,
    }
}

use Severity::{Critical, Debug, Error, Info, Warn};

/// Default severities are the catalogue's; rules raise them where the catalogue says so
/// (a failed quality check is `warn`, a mode change to PROGRAM is `error`).
pub const CATALOG: &[CatalogEntry] = &[
    entry("equipment.status", Info, &[], &[]),
    // Telemetry for report by exception: a measurement left its deadband, or its heartbeat.
    entry("equipment.measurement", Debug, &[], &[]),
    entry("equipment.fault", Warn, &["T0827"], &["SR 2.8"]),
    entry("quality.check", Info, &[], &[]),
    entry("quality.anomaly", Warn, &["T0831"], &[]),
    entry("device.unreachable", Warn, &["T0815", "T0826"], &[]),
    entry("device.recovered", Info, &[], &[]),
    entry("device.restarted", Warn, &["T0816"], &[]),
    entry("diag.counters_reset", Warn, &["T0872"], &[]),
    entry("mode.changed", Warn, &["T0858"], &[]),
    entry("setpoint.changed", Warn, &["T0836"], &[]),
    entry("setpoint.out_of_range", Error, &["T0836", "T0880"], &[]),
    entry("alarm_limit.changed", Warn, &["T0838"], &[]),
    entry("alarm.suppressed", Error, &["T0878"], &[]),
    entry("program.changed", Error, &["T0843", "T0821"], &[]),
    entry("firmware.changed", Error, &["T0857"], &[]),
    entry("identity.changed", Critical, &["T0830"], &["SR 3.1"]),
    entry("cert.invalid", Error, &[], &["SR 1.8"]),
    entry(
        "security_policy.downgraded",
        Warn,
        &[],
        &["SR 3.1", "SR 4.3"],
    ),
    entry("auth.failed", Warn, &[], &["SR 1.11", "SR 2.8"]),
    entry("security.violation", Error, &["T0859", "T0846"], &[]),
    entry("session.anomaly", Warn, &["T0886"], &[]),
    entry("value.stale", Warn, &["T0856"], &[]),
    entry("agent.buffer_high", Warn, &[], &["SR 2.9"]),
    entry("agent.buffer_dropped", Error, &[], &["SR 2.10"]),
    // Not in the station catalogue: the store was unreadable and was replaced (SR 2.10: the
    // loss of whatever it held must be visible).
    entry("agent.buffer_reset", Error, &[], &["SR 2.10"]),
    entry("forward.dead_lettered", Error, &[], &["SR 2.10"]),
    entry("forward.upstream_down", Warn, &[], &["SR 2.10"]),
    entry("agent.clock_skew", Warn, &[], &["SR 2.11"]),
    entry("agent.started", Info, &[], &["SR 2.8"]),
    entry("agent.stopped", Info, &[], &["SR 2.8"]),
    entry("agent.config_changed", Info, &[], &["SR 2.8"]),
];

/// The catalogue row for `event_type`, if it is one the agent knows.
pub fn catalog_entry(event_type: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.event_type == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_name_is_unique_and_valid() {
        for (i, e) in CATALOG.iter().enumerate() {
            assert!(
                CATALOG[i + 1..]
                    .iter()
                    .all(|o| o.event_type != e.event_type),
                "{} twice",
                e.event_type
            );
            let event = crate::SecurityEvent::new("gw", e.event_type);
            event.check().unwrap();
        }
    }
}
