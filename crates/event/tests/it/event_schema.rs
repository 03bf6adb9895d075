//! The JSON form of events is checked against `crates/event/schema/security-event.v1.json` by Python's
//! `jsonschema` (installed by `scripts/test`), so the schema and the code cannot drift apart.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use linesentry_event::{SecurityEvent, Severity, CATALOG};

fn validate(lines: &[String]) -> (bool, String) {
    let root = Path::new(repo!());
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        writeln!(file, "{l}").unwrap();
    }
    let out = Command::new("python3")
        .arg(root.join("crates/testkit/peers/validate_events.py"))
        .arg(root.join("crates/event/schema/security-event.v1.json"))
        .arg(file.path())
        .output()
        .expect("python3 is needed (scripts/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named 'jsonschema'"),
        "the Python package jsonschema is missing: run scripts/test or pip install -r tests/requirements.txt"
    );
    (out.status.success(), text)
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
