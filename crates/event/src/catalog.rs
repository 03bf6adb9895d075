//! The event catalogue of `docs/EVENTS.md`: every event type linesentry emits, as the
//! [`EventType`] enum, so a type that is not in the catalogue does not compile; for the
//! agent's types, the default severity and the ATT&CK for ICS / IEC 62443 references
//! ([`CATALOG`]); and [`SeverityMap`], the defaults with the configuration's overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::severity::Severity;

/// Declares [`EventType`] with its wire names, in catalogue order.
macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every event type linesentry emits. On the wire an event type is its dotted name
        /// ([`EventType::as_str`]); a decoded [`crate::SecurityEvent`] keeps the name as text,
        /// since a newer gateway may send a type this build does not know
        /// ([`crate::SecurityEvent::kind`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($(#[$doc])* $variant,)*
        }

        impl EventType {
            /// Every type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The dotted wire name, e.g. `setpoint.changed`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    EquipmentStatus = "equipment.status",
    EquipmentMeasurement = "equipment.measurement",
    EquipmentFault = "equipment.fault",
    QualityCheck = "quality.check",
    QualityAnomaly = "quality.anomaly",
    DeviceUnreachable = "device.unreachable",
    DeviceRecovered = "device.recovered",
    DeviceRestarted = "device.restarted",
    DiagCountersReset = "diag.counters_reset",
    ModeChanged = "mode.changed",
    SetpointChanged = "setpoint.changed",
    SetpointOutOfRange = "setpoint.out_of_range",
    AlarmLimitChanged = "alarm_limit.changed",
    AlarmSuppressed = "alarm.suppressed",
    ProgramChanged = "program.changed",
    FirmwareChanged = "firmware.changed",
    IdentityChanged = "identity.changed",
    CertInvalid = "cert.invalid",
    SecurityPolicyDowngraded = "security_policy.downgraded",
    AuthFailed = "auth.failed",
    SecurityViolation = "security.violation",
    SessionAnomaly = "session.anomaly",
    ValueStale = "value.stale",
    AgentBufferHigh = "agent.buffer_high",
    AgentBufferDropped = "agent.buffer_dropped",
    AgentBufferReset = "agent.buffer_reset",
    ForwardDeadLettered = "forward.dead_lettered",
    ForwardUpstreamDown = "forward.upstream_down",
    AgentClockSkew = "agent.clock_skew",
    AgentStarted = "agent.started",
    AgentStopped = "agent.stopped",
    AgentConfigChanged = "agent.config_changed",
    // The original design's events of people and services.
    UserLogin = "user.login",
    UserLogout = "user.logout",
    AccessDenied = "access.denied",
    /// A request to the collector's API (its audit trail).
    ApiAccess = "api.access",
    SystemError = "system.error",
    // The collector's own events (docs/COLLECTOR.md).
    CollectorStarted = "collector.started",
    AlertRaised = "alert.raised",
    AlertAcknowledged = "alert.acknowledged",
    /// A batch the collector refused (bad signature, malformed, too large).
    IngestRejected = "ingest.rejected",
    WebhookFailed = "webhook.failed",
    GatewayOnline = "gateway.online",
    GatewayOffline = "gateway.offline",
    /// A SIEM destination keeps failing: its outbox grows (`docs/SIEM.md`).
    SiemDeliveryFailed = "siem.delivery_failed",
    /// A SIEM destination that had failed delivers again.
    SiemRecovered = "siem.recovered",
    /// `linesentry-collector siem test NAME`: a message sent to check a destination.
    SiemTest = "siem.test",
}

/// Default severities of the types that are not in the agent's [`CATALOG`].
const OTHER_DEFAULTS: &[(EventType, Severity)] = &[
    (EventType::UserLogin, Severity::Info),
    (EventType::UserLogout, Severity::Info),
    (EventType::AccessDenied, Severity::Warn),
    (EventType::ApiAccess, Severity::Debug),
    (EventType::SystemError, Severity::Error),
    (EventType::CollectorStarted, Severity::Info),
    (EventType::AlertRaised, Severity::Warn),
    (EventType::AlertAcknowledged, Severity::Info),
    (EventType::IngestRejected, Severity::Warn),
    (EventType::WebhookFailed, Severity::Error),
    (EventType::GatewayOnline, Severity::Info),
    (EventType::GatewayOffline, Severity::Warn),
    (EventType::SiemDeliveryFailed, Severity::Error),
    (EventType::SiemRecovered, Severity::Info),
    (EventType::SiemTest, Severity::Info),
];

impl EventType {
    /// The type named `name`, if it is in the catalogue.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == name)
    }

    /// The agent's catalogue row of this type; `None` for the collector's and the design's
    /// service types.
    pub fn entry(self) -> Option<&'static CatalogEntry> {
        CATALOG.iter().find(|e| e.event_type == self)
    }

    /// The severity an event of this type gets unless a rule or an override decides.
    pub fn default_severity(self) -> Severity {
        if let Some(entry) = self.entry() {
            return entry.severity;
        }
        OTHER_DEFAULTS
            .iter()
            .find(|(t, _)| *t == self)
            .map_or(Severity::Info, |(_, s)| *s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{}`", .0.escape_debug())]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One row of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    pub event_type: EventType,
    pub severity: Severity,
    /// MITRE ATT&CK for ICS technique ids, carried in `event_data.attack`.
    pub attack: &'static [&'static str],
    /// IEC 62443-3-3 system requirements.
    pub iec62443: &'static [&'static str],
}

const fn entry(
    event_type: EventType,
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
    entry(EventType::EquipmentStatus, Info, &[], &[]),
    // Telemetry for report by exception: a measurement left its deadband, or its heartbeat.
    entry(EventType::EquipmentMeasurement, Debug, &[], &[]),
    entry(EventType::EquipmentFault, Warn, &["T0827"], &["SR 2.8"]),
    entry(EventType::QualityCheck, Info, &[], &[]),
    entry(EventType::QualityAnomaly, Warn, &["T0831"], &[]),
    entry(EventType::DeviceUnreachable, Warn, &["T0815", "T0826"], &[]),
    entry(EventType::DeviceRecovered, Info, &[], &[]),
    entry(EventType::DeviceRestarted, Warn, &["T0816"], &[]),
    entry(EventType::DiagCountersReset, Warn, &["T0872"], &[]),
    entry(EventType::ModeChanged, Warn, &["T0858"], &[]),
    entry(EventType::SetpointChanged, Warn, &["T0836"], &[]),
    entry(
        EventType::SetpointOutOfRange,
        Error,
        &["T0836", "T0880"],
        &[],
    ),
    entry(EventType::AlarmLimitChanged, Warn, &["T0838"], &[]),
    entry(EventType::AlarmSuppressed, Error, &["T0878"], &[]),
    entry(EventType::ProgramChanged, Error, &["T0843", "T0821"], &[]),
    entry(EventType::FirmwareChanged, Error, &["T0857"], &[]),
    entry(
        EventType::IdentityChanged,
        Critical,
        &["T0830"],
        &["SR 3.1"],
    ),
    entry(EventType::CertInvalid, Error, &[], &["SR 1.8"]),
    entry(
        EventType::SecurityPolicyDowngraded,
        Warn,
        &[],
        &["SR 3.1", "SR 4.3"],
    ),
    entry(EventType::AuthFailed, Warn, &[], &["SR 1.11", "SR 2.8"]),
    entry(
        EventType::SecurityViolation,
        Error,
        &["T0859", "T0846"],
        &[],
    ),
    entry(EventType::SessionAnomaly, Warn, &["T0886"], &[]),
    entry(EventType::ValueStale, Warn, &["T0856"], &[]),
    entry(EventType::AgentBufferHigh, Warn, &[], &["SR 2.9"]),
    entry(EventType::AgentBufferDropped, Error, &[], &["SR 2.10"]),
    // Not in the station catalogue: the store was unreadable and was replaced (SR 2.10: the
    // loss of whatever it held must be visible).
    entry(EventType::AgentBufferReset, Error, &[], &["SR 2.10"]),
    entry(EventType::ForwardDeadLettered, Error, &[], &["SR 2.10"]),
    entry(EventType::ForwardUpstreamDown, Warn, &[], &["SR 2.10"]),
    entry(EventType::AgentClockSkew, Warn, &[], &["SR 2.11"]),
    entry(EventType::AgentStarted, Info, &[], &["SR 2.8"]),
    entry(EventType::AgentStopped, Info, &[], &["SR 2.8"]),
    entry(EventType::AgentConfigChanged, Info, &[], &["SR 2.8"]),
];

/// The catalogue row for the type named `event_type`, if it is one the agent emits.
pub fn catalog_entry(event_type: &str) -> Option<&'static CatalogEntry> {
    EventType::from_name(event_type).and_then(EventType::entry)
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
    fn every_type_name_is_unique_and_parses_back() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert!(
                EventType::ALL[i + 1..]
                    .iter()
                    .all(|o| o.as_str() != t.as_str()),
                "{t} twice"
            );
            assert_eq!(t.as_str().parse::<EventType>(), Ok(*t));
        }
        assert_eq!(
            "never.heard.of".parse::<EventType>(),
            Err(UnknownEventType("never.heard.of".into()))
        );
    }

    #[test]
    fn every_catalogue_row_is_a_distinct_type_and_keeps_its_severity() {
        for (i, e) in CATALOG.iter().enumerate() {
            assert!(CATALOG[i + 1..]
                .iter()
                .all(|o| o.event_type != e.event_type));
            assert_eq!(e.event_type.default_severity(), e.severity);
            assert_eq!(catalog_entry(e.event_type.as_str()), Some(e));
        }
        assert_eq!(EventType::ApiAccess.entry(), None);
        assert_eq!(EventType::ApiAccess.default_severity(), Severity::Debug);
    }

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
}
