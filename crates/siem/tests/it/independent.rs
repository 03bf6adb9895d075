//! The CEF lines and RFC 5424 messages read by parsers nobody here wrote: PyPI's `pycef`
//! and `syslog-rfc5424-parser`, run by `tests/parse_with_peers.py`
//! (`pip install -r tests/requirements.txt`).

use std::path::Path;

use linesentry_event::SecurityEvent;
use linesentry_siem::{cef, class_of, severity, syslog};
use serde_json::{json, Value};

use crate::samples::{every_type, exporter, hostile_event, provenance, HOSTILE};

fn check(cases: &[Value]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parse_with_peers.py");
    linesentry_testkit::python_on_lines(&script, &[], cases)
}

fn syslog_severity_name(e: &SecurityEvent) -> &'static str {
    match severity::syslog(e.severity) {
        2 => "crit",
        3 => "err",
        4 => "warning",
        6 => "info",
        _ => "debug",
    }
}

fn syslog_case(e: &SecurityEvent, body: &str, hostname: &str) -> Value {
    let m = syslog::frame(e, body, &syslog::SyslogOptions::default(), &provenance()).unwrap();
    let mut sd = json!({
        "id": e.id.to_string(),
        "type": e.event_type,
        "seq": e.seq.to_string(),
        "gateway": e.gateway_id,
        "chain": "verified",
    });
    if let Some(s) = &e.station_id {
        sd["station"] = s.as_str().into();
    }
    json!({"kind": "syslog", "line": m, "expect": {
        "hostname": hostname, "appname": "linesentry", "procid": null,
        "msgid": e.event_type, "severity": syslog_severity_name(e), "facility": "local0",
        "msg": body, "sd": sd,
    }})
}

#[test]
fn independent_parsers_read_cef_and_rfc5424_of_every_type_as_we_document() {
    let mut cases = Vec::new();
    for e in every_type() {
        let line = cef::encode(&e, &exporter(), &provenance());
        let mut expect = json!({
            "CEFVersion": "0",
            "DeviceVendor": "linesentry",
            "DeviceProduct": "linesentry",
            "DeviceEventClassID": class_of(e.kind().unwrap()).id.to_string(),
            "Name": class_of(e.kind().unwrap()).title,
            "Severity": severity::cef(e.severity).to_string(),
            "externalId": e.id.to_string(),
            "gateway": e.gateway_id,
            "seq": e.seq.to_string(),
            "chain": "verified",
            "act": e.event_type,
        });
        if let Some(s) = &e.station_id {
            expect["station"] = s.as_str().into();
        }
        let attack = e
            .kind()
            .and_then(linesentry_event::EventType::entry)
            .map(|c| c.attack.join(","))
            .unwrap_or_default();
        if !attack.is_empty() {
            expect["attack"] = attack.into();
        }
        cases.push(json!({"kind": "cef", "line": line, "expect": expect}));
        cases.push(syslog_case(&e, &line, "gw-line3-01"));
    }
    let (ok, report) = check(&cases);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("{} messages checked, 0 errors", cases.len())),
        "{report}"
    );
}

#[test]
fn an_independent_rfc5424_parser_reads_hostile_structured_data_back_exactly() {
    // syslog-rfc5424-parser 0.3.2 misreads a PARAM-VALUE that ends in an escaped backslash
    // (`\\"` followed by another param: it takes the quote as escaped), though RFC 5424
    // 6.3.3 escapes `\` exactly so; our own parser (parse.rs) covers that case. Here the
    // hostile text gets a plain last character.
    let mut e = hostile_event();
    e.gateway_id = format!("gw{HOSTILE}end");
    e.station_id = Some(format!("{HOSTILE}end"));
    // what reaches the SD: controls (CR/LF included) become U+FFFD
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    };
    let body = cef::encode(&e, &exporter(), &provenance());
    let mut case = syslog_case(&e, &body, "");
    let m = case["line"].as_str().unwrap().to_owned();
    let hostname = m.split(' ').nth(2).unwrap().to_owned();
    case["expect"]["hostname"] = hostname.into();
    case["expect"]["sd"]["gateway"] = clean(&e.gateway_id).into();
    case["expect"]["sd"]["station"] = clean(e.station_id.as_deref().unwrap()).into();
    let (ok, report) = check(&[case]);
    assert!(ok, "{report}");
}
