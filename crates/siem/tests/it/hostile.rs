//! Data with everything a format must escape (`|`, `=`, `\`, CR/LF, quotes, brackets,
//! non-ASCII, NUL, ESC, a BOM) and very long strings: every format gives a correct encoding
//! that reads back to the original text (controls other than CR/LF become U+FFFD in the
//! text formats; JSON keeps them escaped), and nothing panics.

use linesentry_siem::{cef, ecs, leef, ocsf, syslog, Provenance};
use serde_json::Value;

use crate::parse;
use crate::samples::{exporter, hostile_event, provenance, HOSTILE};

/// What the text formats deliver for HOSTILE: controls without an escape replaced.
fn text_form(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\r' && c != '\n' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn cef_escapes_hostile_text_so_it_reads_back_and_the_header_keeps_its_seven_fields() {
    let e = hostile_event();
    let line = cef::encode(&e, &exporter(), &provenance());
    let p = parse::cef(&line);
    assert_eq!(p.header[4], "403");
    assert_eq!(p.labelled("station"), Some(text_form(HOSTILE).as_str()));
    assert_eq!(
        p.labelled("gateway"),
        Some(text_form(&format!("gw{HOSTILE}")).as_str())
    );
    assert_eq!(p.ext["suid"], text_form(HOSTILE));
    assert_eq!(
        p.labelled("attack"),
        Some(text_form(&format!("T0859,{HOSTILE}")).as_str())
    );
    // msg is JSON text: its controls are \u escapes already, so it reads back exactly.
    let data: Value = serde_json::from_str(&p.ext["msg"]).unwrap();
    assert_eq!(data["note"], HOSTILE);
    assert_eq!(data[HOSTILE], HOSTILE);
}

#[test]
fn leef_escapes_hostile_text_so_it_reads_back() {
    let e = hostile_event();
    let line = leef::encode(&e, &exporter(), &provenance());
    let p = parse::leef(&line);
    assert_eq!(p.attrs["station"], text_form(HOSTILE));
    assert_eq!(p.attrs["usrName"], text_form(HOSTILE));
    assert_eq!(p.attrs["gateway"], text_form(&format!("gw{HOSTILE}")));
    let data: Value = serde_json::from_str(&p.attrs["data"]).unwrap();
    assert_eq!(data["note"], HOSTILE);
}

#[test]
fn syslog_sd_escapes_hostile_text_and_header_fields_stay_printable_ascii() {
    let e = hostile_event();
    let body = cef::encode(&e, &exporter(), &provenance());
    let m = syslog::frame(&e, &body, &syslog::SyslogOptions::default(), &provenance()).unwrap();
    let p = parse::syslog(&m);
    assert_eq!(
        p.params["station"],
        text_form(HOSTILE).replace(['\r', '\n'], "\u{FFFD}")
    );
    assert!(
        p.fields[1].starts_with(r#"gwa|b=c\d__e"f]g"#),
        "{}",
        p.fields[1]
    );
    assert_eq!(p.msg, body);
    syslog::lf_framed(&m).unwrap();
}

#[test]
fn json_formats_keep_hostile_text_exactly() {
    let e = hostile_event();
    for v in [
        ocsf::to_value(&e, &exporter(), &provenance()),
        ecs::to_value(&e, &exporter(), &provenance()),
    ] {
        let text = v.to_string();
        assert!(!text.contains(['\n', '\r', '\0']));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
    let o = ocsf::to_value(&e, &exporter(), &provenance());
    assert_eq!(o["unmapped"]["linesentry"]["station_id"], HOSTILE);
    assert_eq!(o["finding_info"]["attacks"][1]["technique"]["uid"], HOSTILE);
    let x = ecs::to_value(&e, &exporter(), &provenance());
    assert_eq!(x["labels"]["station"], HOSTILE);
}

#[test]
fn a_very_long_event_is_truncated_in_the_syslog_body_only_and_marked() {
    let long = "x|=\\é".repeat(40_000);
    let e = hostile_event().data("dump", long.as_str());
    let opts = syslog::SyslogOptions::default();
    for body in [
        cef::encode(&e, &exporter(), &provenance()),
        leef::encode(&e, &exporter(), &provenance()),
        ocsf::encode(&e, &exporter(), &provenance()),
        ecs::encode(&e, &exporter(), &provenance()),
    ] {
        assert!(body.len() > 100_000);
        let m = syslog::frame(&e, &body, &opts, &provenance()).unwrap();
        assert!(
            m.len() <= opts.max_message && m.len() > opts.max_message - 4,
            "{}",
            m.len()
        );
        let p = parse::syslog(&m);
        assert_eq!(p.params["truncated"], body.len().to_string());
        assert_eq!(p.params["seq"], "7");
        assert!(body.starts_with(&p.msg));
        let trailing = p.msg.bytes().rev().take_while(|b| *b == b'\\').count();
        assert_eq!(trailing % 2, 0, "half an escape left at the cut");
    }
    // and a CEF line that long still parses whole
    let p = parse::cef(&cef::encode(&e, &exporter(), &Provenance::default()));
    let data: Value = serde_json::from_str(&p.ext["msg"]).unwrap();
    assert_eq!(data["dump"], long);
}

#[test]
fn empty_strings_and_extreme_values_encode() {
    let mut e = hostile_event();
    e.gateway_id = String::new();
    e.station_id = Some(String::new());
    e.event_type = String::new();
    e.seq = u64::MAX;
    e.timestamp = linesentry_event::Timestamp::from_micros(i64::MIN);
    let p = parse::cef(&cef::encode(&e, &exporter(), &provenance()));
    assert_eq!(p.labelled("seq"), Some(u64::MAX.to_string().as_str()));
    parse::leef(&leef::encode(&e, &exporter(), &provenance()));
    let m = syslog::frame(&e, "", &syslog::SyslogOptions::default(), &provenance()).unwrap();
    let s = parse::syslog(&m);
    assert_eq!((s.fields[1].as_str(), s.fields[4].as_str()), ("-", "-"));
    ocsf::encode(&e, &exporter(), &provenance());
    ecs::encode(&e, &exporter(), &provenance());
}

mod any_text {
    use linesentry_event::{SecurityEvent, Severity, Timestamp};
    use linesentry_siem::{cef, ecs, leef, ocsf, syslog, Provenance};
    use proptest::prelude::*;

    use crate::parse;
    use crate::samples::exporter;

    fn event(texts: &[String], seq: u64, micros: i64, severity: usize) -> SecurityEvent {
        let mut e = SecurityEvent::stamped(
            texts[0].clone(),
            linesentry_event::EventType::ModeChanged,
            Timestamp::from_micros(micros),
        )
        .station(texts[1].clone())
        .data(&texts[2], texts[3].clone())
        .context(&texts[3], texts[2].clone())
        .severity(Severity::ALL[severity % 5]);
        e.event_type.clone_from(&texts[2]);
        e.user_id = Some(texts[3].clone());
        e.seq = seq;
        e
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_in_any_field_encodes_in_every_format_without_panicking_and_text_formats_parse_back(
            texts in proptest::collection::vec(any::<String>(), 4),
            seq in any::<u64>(),
            micros in any::<i64>(),
            severity in 0usize..5,
            max in 480usize..2000,
        ) {
            let e = event(&texts, seq, micros, severity);
            let p = Provenance::default();
            let c = cef::encode(&e, &exporter(), &p);
            let parsed = parse::cef(&c);
            let seq_text = seq.to_string();
            prop_assert_eq!(parsed.labelled("seq"), Some(seq_text.as_str()));
            let l = leef::encode(&e, &exporter(), &p);
            let parsed = parse::leef(&l);
            prop_assert_eq!(&parsed.attrs["seq"], &seq_text);
            for body in [c, l, ocsf::encode(&e, &exporter(), &p), ecs::encode(&e, &exporter(), &p)] {
                let opts = syslog::SyslogOptions { max_message: max, ..Default::default() };
                match syslog::frame(&e, &body, &opts, &p) {
                    Ok(m) => {
                        prop_assert!(m.len() <= max);
                        let s = parse::syslog(&m);
                        prop_assert_eq!(&s.params["seq"], &seq_text);
                        prop_assert!(syslog::lf_framed(&m).is_ok());
                    }
                    Err(err) => prop_assert!(
                        matches!(err, linesentry_siem::EncodeError::HeaderOverLimit { .. }),
                        "{}", err
                    ),
                }
            }
        }
    }
}
