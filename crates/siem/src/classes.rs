//! The published dictionary: one fixed numeric event class id per event type, its title,
//! and the family that decides the OCSF class and the ECS categorisation.
//!
//! The ids are the CEF `Device Event Class ID` and the LEEF `EventID`; SIEM content (rules,
//! dashboards, QRadar QID maps) is keyed on them, so an id is **never changed and never
//! reused**: a type that leaves the catalogue moves its id to [`RETIRED`]. Ranges by area:
//! 1xx equipment and quality, 2xx device health, 3xx process and configuration changes,
//! 4xx security and access, 5xx the agent itself, 6xx the collector itself;
//! [`UNKNOWN_CLASS_ID`] is an event type this build does not know (a newer gateway's).
//! `docs/SIEM.md` carries this table; a test fails when the two differ.
//!
//! [`class_of`] is an exhaustive `match`: a new [`EventType`] does not compile until it has
//! its row here.

use linesentry_event::EventType;

/// The class id of an event type that is not in this build's catalogue.
pub const UNKNOWN_CLASS_ID: u16 = 9999;

/// Ids once given to types that have left the catalogue; never to be given again.
pub const RETIRED: &[u16] = &[];

/// What kind of record an event type is; decides the OCSF class and the ECS categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A suspicious observation: OCSF Detection Finding (2004).
    Detection,
    /// An observed change of a device's configuration or operating state (setpoint, mode,
    /// program, firmware, identity, alarm limit): OCSF Device Config State Change (5019).
    StateChange,
    /// A state or measurement sample without a finding: OCSF Device Config State Change
    /// (5019), activity Log.
    Telemetry,
    /// Authentication of a user or of the agent's own session: OCSF Authentication (3002).
    Authentication,
    /// The agent's or collector's own lifecycle and health: OCSF Event Log Activity (1008).
    Health,
    /// A request to the collector's API (its audit trail): OCSF API Activity (6003).
    ApiAudit,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Detection => "detection",
            Family::StateChange => "state_change",
            Family::Telemetry => "telemetry",
            Family::Authentication => "authentication",
            Family::Health => "health",
            Family::ApiAudit => "api_audit",
        }
    }
}

/// Which program makes events of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Agent,
    Collector,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Agent => "linesentry-agent",
            Origin::Collector => "linesentry-collector",
        }
    }
}

/// One row of the dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// CEF Device Event Class ID and LEEF EventID.
    pub id: u16,
    /// The CEF `Name`, the OCSF `finding_info.title` / `message`, the ECS `message`.
    pub title: &'static str,
    pub family: Family,
    pub origin: Origin,
}

const fn c(id: u16, title: &'static str, family: Family, origin: Origin) -> Class {
    Class {
        id,
        title,
        family,
        origin,
    }
}

/// The dictionary row of `event_type`.
pub fn class_of(event_type: EventType) -> Class {
    use EventType as T;
    use Family::{ApiAudit, Authentication, Detection, Health, StateChange, Telemetry};
    use Origin::{Agent, Collector};
    match event_type {
        T::EquipmentStatus => c(100, "Equipment status", Telemetry, Agent),
        T::EquipmentMeasurement => c(101, "Equipment measurement", Telemetry, Agent),
        T::EquipmentFault => c(102, "Equipment fault", Detection, Agent),
        T::QualityCheck => c(110, "Quality check", Telemetry, Agent),
        T::QualityAnomaly => c(111, "Quality anomaly", Detection, Agent),
        T::DeviceUnreachable => c(200, "Device unreachable", Detection, Agent),
        T::DeviceRecovered => c(201, "Device recovered", Telemetry, Agent),
        T::DeviceRestarted => c(202, "Device restarted", Detection, Agent),
        T::DiagCountersReset => c(203, "Diagnostic counters reset", Detection, Agent),
        T::ValueStale => c(204, "Value stale or frozen", Detection, Agent),
        T::ModeChanged => c(300, "Operating mode changed", StateChange, Agent),
        T::SetpointChanged => c(301, "Setpoint changed", StateChange, Agent),
        T::SetpointOutOfRange => c(302, "Setpoint out of range", Detection, Agent),
        T::AlarmLimitChanged => c(303, "Alarm limit changed", StateChange, Agent),
        T::AlarmSuppressed => c(304, "Alarm suppressed", Detection, Agent),
        T::ProgramChanged => c(305, "Program changed", StateChange, Agent),
        T::FirmwareChanged => c(306, "Firmware changed", StateChange, Agent),
        T::IdentityChanged => c(307, "Device identity changed", StateChange, Agent),
        T::CertInvalid => c(400, "Certificate invalid", Detection, Agent),
        T::SecurityPolicyDowngraded => c(401, "Security policy downgraded", Detection, Agent),
        T::AuthFailed => c(402, "Authentication failed", Authentication, Agent),
        T::SecurityViolation => c(403, "Security violation", Detection, Agent),
        T::SessionAnomaly => c(404, "Session anomaly", Detection, Agent),
        T::UserLogin => c(410, "User login", Authentication, Collector),
        T::UserLogout => c(411, "User logout", Authentication, Collector),
        T::AccessDenied => c(412, "Access denied", Detection, Collector),
        T::AgentBufferHigh => c(500, "Agent buffer high", Health, Agent),
        T::AgentBufferDropped => c(501, "Agent buffer dropped events", Health, Agent),
        T::AgentBufferReset => c(502, "Agent buffer reset", Health, Agent),
        T::ForwardDeadLettered => c(503, "Event dead-lettered", Health, Agent),
        T::ForwardUpstreamDown => c(504, "Upstream down", Health, Agent),
        T::AgentClockSkew => c(505, "Clock skew", Health, Agent),
        T::AgentStarted => c(506, "Agent started", Health, Agent),
        T::AgentStopped => c(507, "Agent stopped", Health, Agent),
        T::AgentConfigChanged => c(508, "Agent configuration changed", Health, Agent),
        T::ApiAccess => c(600, "API access", ApiAudit, Collector),
        T::SystemError => c(601, "System error", Health, Collector),
        T::CollectorStarted => c(602, "Collector started", Health, Collector),
        T::AlertRaised => c(603, "Alert raised", Detection, Collector),
        T::AlertAcknowledged => c(604, "Alert acknowledged", Health, Collector),
        T::IngestRejected => c(605, "Ingest rejected", Detection, Collector),
        T::WebhookFailed => c(606, "Webhook delivery failed", Health, Collector),
        T::GatewayOnline => c(607, "Gateway online", Health, Collector),
        T::GatewayOffline => c(608, "Gateway offline", Health, Collector),
        T::SiemDeliveryFailed => c(609, "SIEM delivery failed", Health, Collector),
        T::SiemRecovered => c(610, "SIEM delivery recovered", Health, Collector),
        T::SiemTest => c(611, "SIEM test message", Health, Collector),
    }
}

/// The row for an event type name; `None` for a type this build does not know (encoders
/// then use [`UNKNOWN_CLASS_ID`], the raw name as title, family [`Family::Detection`]).
pub fn class_of_name(name: &str) -> Option<Class> {
    EventType::from_name(name).map(class_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_class_id_no_two_share_one_and_none_is_retired_or_reserved() {
        let mut seen = std::collections::BTreeMap::new();
        for t in EventType::ALL {
            let c = class_of(*t);
            assert!(c.id >= 100 && c.id < UNKNOWN_CLASS_ID, "{t}: {}", c.id);
            assert!(!RETIRED.contains(&c.id), "{t} reuses retired id {}", c.id);
            if let Some(other) = seen.insert(c.id, *t) {
                panic!("{t} and {other} share class id {}", c.id);
            }
            assert!(!c.title.is_empty());
        }
    }

    #[test]
    fn ids_stay_where_they_were_published() {
        // A spot check of the published table: changing these breaks customers' SIEM content.
        assert_eq!(class_of(EventType::EquipmentStatus).id, 100);
        assert_eq!(class_of(EventType::SetpointChanged).id, 301);
        assert_eq!(class_of(EventType::AuthFailed).id, 402);
        assert_eq!(class_of(EventType::AgentStarted).id, 506);
        assert_eq!(class_of(EventType::ApiAccess).id, 600);
        assert_eq!(class_of(EventType::GatewayOffline).id, 608);
    }

    #[test]
    fn unknown_names_have_no_row() {
        assert_eq!(class_of_name("future.thing"), None);
        assert_eq!(class_of_name("mode.changed").map(|c| c.id), Some(300));
    }
}
