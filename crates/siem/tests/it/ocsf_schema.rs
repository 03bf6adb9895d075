//! The OCSF output against the official compiled OCSF 1.8.0 schema, by an independent
//! validator: `tests/validate_ocsf.py` runs PyPI's `ocsf-json-schema` (the OCSF server's
//! export, made into a JSON Schema per class) and `jsonschema`, and checks `type_uid`,
//! which JSON Schema cannot express. Install: `pip install -r tests/requirements.txt`.

use std::path::Path;

use linesentry_siem::ocsf;
use serde_json::Value;

use crate::samples::{every_type, exporter, hostile_event, provenance, unknown_type_event};

fn validate(events: &[Value]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate_ocsf.py");
    linesentry_testkit::python_on_lines(&script, &[], events)
}

#[test]
fn every_class_we_emit_validates_against_the_official_ocsf_1_8_schema() {
    let mut events: Vec<Value> = every_type()
        .iter()
        .map(|e| ocsf::to_value(e, &exporter(), &provenance()))
        .collect();
    events.push(ocsf::to_value(&hostile_event(), &exporter(), &provenance()));
    events.push(ocsf::to_value(
        &unknown_type_event(),
        &exporter(),
        &linesentry_siem::Provenance::default(),
    ));
    let (ok, report) = validate(&events);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!(
            "{} events checked, 0 errors; classes: 1008,2004,3002,5019,6003",
            events.len()
        )),
        "{report}"
    );
}

#[test]
fn the_validator_refuses_what_ocsf_forbids() {
    let good = ocsf::to_value(&every_type()[11], &exporter(), &provenance());
    assert_eq!(good["class_uid"], 2004);
    let mut no_finding = good.clone();
    no_finding.as_object_mut().unwrap().remove("finding_info");
    let mut bad_type_uid = good.clone();
    bad_type_uid["type_uid"] = 200_402.into();
    let mut string_severity = good.clone();
    string_severity["severity_id"] = "4".into();
    let mut unknown_attr = good;
    unknown_attr["seq"] = 1.into();
    for (what, event) in [
        ("finding_info", no_finding),
        ("type_uid", bad_type_uid),
        ("severity_id", string_severity),
        ("seq", unknown_attr),
    ] {
        let (ok, report) = validate(&[event]);
        assert!(!ok && report.contains(what), "{what}: {report}");
    }
}
