//! The JSON form of events is checked against `crates/event/schema/security-event.v1.json` by Python's
//! `jsonschema` (installed by `scripts/test`), so the schema and the code cannot drift apart.

use std::path::Path;

use linesentry_event::{SecurityEvent, Severity, CATALOG};

fn validate(lines: &[String]) -> (bool, String) {
    let root = Path::new(repo!());
    linesentry_testkit::python_on_lines(
        &root.join("crates/testkit/peers/validate_events.py"),
        &[&root.join("crates/event/schema/security-event.v1.json")],
        lines,
    )
}

fn every_kind_of_event() -> Vec<String> {
    let mut lines = Vec::new();
    for (i, entry) in CATALOG.iter().enumerate() {
        let mut e = SecurityEvent::new("gw-schema-01", entry.event_type)
            .data("tag", "t")
            .data("value", 1.5);
        e.seq = i as u64 + 1;
        if i % 2 == 0 {
            e = e.station("press-01").correlation(uuid::Uuid::now_v7());
            e.user_id = Some("operator7".into());
            e.source_ip = Some(if i % 4 == 0 {
                "10.1.2.3".parse().unwrap()
            } else {
                "fe80::1".parse().unwrap()
            });
            e.prev_hash = Some("ab".repeat(32));
        }
        lines.push(e.severity(Severity::ALL[i % 5]).to_json());
    }
    lines
}

#[test]
fn every_catalogue_event_matches_the_published_schema() {
    let lines = every_kind_of_event();
    let (ok, report) = validate(&lines);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("{} events checked, 0 errors", lines.len())),
        "{report}"
    );
}

#[test]
fn the_schema_check_rejects_what_the_schema_forbids() {
    let mut v: serde_json::Value = serde_json::from_str(&every_kind_of_event()[0]).unwrap();
    v["severity"] = "fatal".into();
    v["surprise"] = 1.into();
    v["seq"] = 0.into();
    let (ok, report) = validate(&[v.to_string()]);
    assert!(!ok, "{report}");
    assert!(report.contains("3 errors"), "{report}");
}
