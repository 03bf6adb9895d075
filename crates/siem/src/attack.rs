//! MITRE ATT&CK for ICS: the names and primary tactic of the techniques the catalogue
//! references, for OCSF `finding_info.attacks` and ECS `threat.*`.
//!
//! A technique id an event carries that is not in [`TECHNIQUES`] is still exported, by id
//! only. The primary tactic is the first tactic the ATT&CK for ICS matrix lists for the
//! technique.

use linesentry_event::SecurityEvent;

/// The ATT&CK for ICS matrix version the names were taken from.
pub const MATRIX_VERSION: &str = "v17";

/// An ATT&CK for ICS technique and its primary tactic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    pub id: &'static str,
    pub name: &'static str,
    pub tactic_id: &'static str,
    pub tactic: &'static str,
}

const fn t(
    id: &'static str,
    name: &'static str,
    tactic_id: &'static str,
    tactic: &'static str,
) -> Technique {
    Technique {
        id,
        name,
        tactic_id,
        tactic,
    }
}

const IMPACT: (&str, &str) = ("TA0105", "Impact");
const INHIBIT: (&str, &str) = ("TA0107", "Inhibit Response Function");
const IMPAIR: (&str, &str) = ("TA0106", "Impair Process Control");
const EVASION: (&str, &str) = ("TA0103", "Evasion");
const EXECUTION: (&str, &str) = ("TA0104", "Execution");
const LATERAL: (&str, &str) = ("TA0109", "Lateral Movement");
const PERSISTENCE: (&str, &str) = ("TA0110", "Persistence");
const COLLECTION: (&str, &str) = ("TA0100", "Collection");
const DISCOVERY: (&str, &str) = ("TA0102", "Discovery");
const INITIAL: (&str, &str) = ("TA0108", "Initial Access");

/// Every technique the catalogue (`linesentry_event::CATALOG`) references.
pub const TECHNIQUES: &[Technique] = &[
    t("T0815", "Denial of View", IMPACT.0, IMPACT.1),
    t("T0816", "Device Restart/Shutdown", INHIBIT.0, INHIBIT.1),
    t(
        "T0821",
        "Modify Controller Tasking",
        EXECUTION.0,
        EXECUTION.1,
    ),
    t("T0826", "Loss of Availability", IMPACT.0, IMPACT.1),
    t("T0827", "Loss of Control", IMPACT.0, IMPACT.1),
    t(
        "T0830",
        "Adversary-in-the-Middle",
        COLLECTION.0,
        COLLECTION.1,
    ),
    t("T0831", "Manipulation of Control", IMPACT.0, IMPACT.1),
    t("T0836", "Modify Parameter", IMPAIR.0, IMPAIR.1),
    t("T0838", "Modify Alarm Settings", INHIBIT.0, INHIBIT.1),
    t("T0843", "Program Download", LATERAL.0, LATERAL.1),
    t("T0846", "Remote System Discovery", DISCOVERY.0, DISCOVERY.1),
    t("T0856", "Spoof Reporting Message", EVASION.0, EVASION.1),
    t("T0857", "System Firmware", PERSISTENCE.0, PERSISTENCE.1),
    t("T0858", "Change Operating Mode", EXECUTION.0, EXECUTION.1),
    t("T0859", "Valid Accounts", PERSISTENCE.0, PERSISTENCE.1),
    t("T0872", "Indicator Removal on Host", EVASION.0, EVASION.1),
    t("T0878", "Alarm Suppression", INHIBIT.0, INHIBIT.1),
    t("T0880", "Loss of Safety", IMPACT.0, IMPACT.1),
    t("T0886", "Remote Services", INITIAL.0, INITIAL.1),
];

/// The technique with id `id`, if this table knows it.
pub fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|t| t.id == id)
}

/// The technique ids of `event`: the strings of `event_data.attack` when it is a non-empty
/// array (a rule decided), else the catalogue's for the event's type. Empty strings and
/// non-strings are skipped.
pub fn ids_of(event: &SecurityEvent) -> Vec<String> {
    if let Some(serde_json::Value::Array(items)) = event.event_data.get("attack") {
        let ids: Vec<String> = items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            return ids;
        }
    }
    event
        .kind()
        .and_then(linesentry_event::EventType::entry)
        .map(|e| e.attack.iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, CATALOG};

    #[test]
    fn every_catalogue_technique_has_a_name_and_tactic() {
        for e in CATALOG {
            for id in e.attack {
                assert!(
                    technique(id).is_some(),
                    "{id} of {} has no row",
                    e.event_type
                );
            }
        }
    }

    #[test]
    fn event_data_attack_wins_over_the_catalogue() {
        let e = SecurityEvent::new("gw", EventType::SetpointChanged);
        assert_eq!(ids_of(&e), ["T0836"]);
        let e = e.data("attack", serde_json::json!(["T0855", 7, ""]));
        assert_eq!(ids_of(&e), ["T0855"]);
        let e = SecurityEvent::new("gw", EventType::AgentStarted).data("attack", "T0800");
        assert!(ids_of(&e).is_empty());
    }
}
