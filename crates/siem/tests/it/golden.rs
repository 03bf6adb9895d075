//! One sample event per format under `tests/golden/`, byte for byte; `LINESENTRY_BLESS=1`
//! rewrites them after a deliberate change (review the diff: SIEM parsers depend on it).

use std::path::PathBuf;

use linesentry_siem::{cef, ecs, leef, ocsf, syslog};

use crate::samples::{exporter, golden_event, provenance};

/// (file name, encoding of the golden event)
pub(crate) fn outputs() -> Vec<(&'static str, String)> {
    let e = golden_event();
    let cef_line = cef::encode(&e, &exporter(), &provenance());
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap() + "\n";
    vec![
        ("sample.cef", cef_line.clone() + "\n"),
        (
            "sample.leef",
            leef::encode(&e, &exporter(), &provenance()) + "\n",
        ),
        (
            "sample.syslog",
            syslog::frame(
                &e,
                &cef_line,
                &syslog::SyslogOptions::default(),
                &provenance(),
            )
            .unwrap()
                + "\n",
        ),
        (
            "sample.ocsf.json",
            pretty(ocsf::to_value(&e, &exporter(), &provenance())),
        ),
        (
            "sample.ecs.json",
            pretty(ecs::to_value(&e, &exporter(), &provenance())),
        ),
    ]
}

pub(crate) fn blessing() -> bool {
    std::env::var_os("LINESENTRY_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn every_format_matches_its_golden_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut stale = Vec::new();
    for (name, text) in outputs() {
        let path = dir.join(name);
        if blessing() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (LINESENTRY_BLESS=1 writes it)", path.display()));
        if want != text {
            stale.push(format!("{name}:\n  golden: {want}  now:    {text}"));
        }
    }
    assert!(
        stale.is_empty(),
        "output differs from tests/golden (LINESENTRY_BLESS=1 rewrites after review):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_golden_syslog_sample_is_octet_countable() {
    let (_, m) = &outputs()[2];
    let m = m.trim_end_matches('\n');
    let framed = syslog::octet_counted(m);
    let (len, rest) = framed.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), rest.len());
}
