use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::event::Timestamp;

fn tag(name: &str, role: TagRole) -> RuleTag {
    RuleTag {
        name: name.into(),
        role,
        unit: None,
        states: BTreeMap::new(),
        limits: None,
    }
}

fn states(pairs: &[(i64, &str)]) -> BTreeMap<i64, String> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn station() -> StationRules {
    let tags = vec![
        RuleTag {
            states: states(&[(0, "idle"), (1, "run"), (3, "fault")]),
            ..tag("state", TagRole::Status)
        },
        RuleTag {
            states: states(&[(1, "RUN"), (2, "PROGRAM"), (3, "REMOTE")]),
            ..tag("mode", TagRole::Mode)
        },
        RuleTag {
            unit: Some("degC".into()),
            limits: Some((150.0, 260.0)),
            ..tag("zone1_sp", TagRole::Setpoint)
        },
        tag("overload_limit", TagRole::AlarmLimit),
        tag("alarm_enable", TagRole::AlarmEnable),
        tag("checksum", TagRole::ProgramChecksum),
        tag("fw", TagRole::Firmware),
        tag("panel", TagRole::PartId),
        tag("verdict", TagRole::QualityResult),
    ];
    StationRules::new(
        Arc::from("gw-1"),
        Arc::from("oven-1"),
        Arc::new(SeverityMap::default()),
        tags,
    )
}

fn reading(tag: &str, value: Value) -> Reading {
    Reading {
        station_id: Arc::from("oven-1"),
        tag: Arc::from(tag),
        value,
        quality: Quality::Good,
        source_time: None,
        received: Timestamp::from_micros(1_700_000_000_000_000),
    }
}

/// (event_type, severity) of each event, in order.
fn kinds(events: &[SecurityEvent]) -> Vec<(&str, Severity)> {
    events
        .iter()
        .map(|e| (e.event_type.as_str(), e.severity))
        .collect()
}

#[test]
fn first_contact_learns_baselines_without_alarming() {
    let mut s = station();
    let out = s.process(&[
        reading("mode", Value::UInt(1)),
        reading("zone1_sp", Value::Float(235.0)),
        reading("overload_limit", Value::UInt(900)),
        reading("checksum", Value::UInt(0xBEEF)),
        reading("fw", Value::Text("2.4.1".into())),
    ]);
    assert!(out.is_empty(), "{:?}", kinds(&out));
}

#[test]
fn each_watched_change_raises_its_event_with_the_reading() {
    let cases: &[(&str, Value, Value, &str, Severity)] = &[
        (
            "zone1_sp",
            Value::Float(235.0),
            Value::Float(245.0),
            "setpoint.changed",
            Severity::Warn,
        ),
        (
            "overload_limit",
            Value::UInt(900),
            Value::UInt(1200),
            "alarm_limit.changed",
            Severity::Warn,
        ),
        (
            "checksum",
            Value::UInt(1),
            Value::UInt(2),
            "program.changed",
            Severity::Error,
        ),
        (
            "fw",
            Value::Text("2.4.1".into()),
            Value::Text("2.5.0".into()),
            "firmware.changed",
            Severity::Error,
        ),
        (
            "mode",
            Value::UInt(1),
            Value::UInt(3),
            "mode.changed",
            Severity::Warn,
        ),
        (
            "mode",
            Value::UInt(1),
            Value::UInt(2),
            "mode.changed",
            Severity::Error,
        ),
    ];
    for (tag, before, after, kind, severity) in cases {
        let mut s = station();
        assert!(s.process(&[reading(tag, before.clone())]).is_empty());
        assert!(
            s.process(&[reading(tag, before.clone())]).is_empty(),
            "no change, no event"
        );
        let out = s.process(&[reading(tag, after.clone())]);
        assert_eq!(kinds(&out), vec![(*kind, *severity)], "{tag}");
        let e = &out[0];
        assert_eq!(e.event_data["tag"], *tag);
        assert_eq!(e.event_data["value"], serde_json::to_value(after).unwrap());
        assert_eq!(
            e.event_data["previous"],
            serde_json::to_value(before).unwrap()
        );
        assert_eq!(e.station_id.as_deref(), Some("oven-1"));
    }
}

#[test]
fn setpoint_events_carry_unit_and_attack_ids() {
    let mut s = station();
    s.process(&[reading("zone1_sp", Value::Float(235.0))]);
    let out = s.process(&[reading("zone1_sp", Value::Float(240.0))]);
    assert_eq!(out[0].event_data["unit"], "degC");
    assert_eq!(out[0].event_data["attack"], serde_json::json!(["T0836"]));
}

#[test]
fn a_setpoint_outside_its_limits_is_an_error_once() {
    let mut s = station();
    s.process(&[reading("zone1_sp", Value::Float(235.0))]);
    let out = s.process(&[reading("zone1_sp", Value::Float(300.0))]);
    assert_eq!(
        kinds(&out),
        vec![
            ("setpoint.changed", Severity::Warn),
            ("setpoint.out_of_range", Severity::Error)
        ]
    );
    assert_eq!(out[1].event_data["limit"]["max"], 260.0);
    assert!(s
        .process(&[reading("zone1_sp", Value::Float(300.0))])
        .is_empty());
}

#[test]
fn a_fault_and_its_recovery_share_one_correlation_id() {
    let mut s = station();
    let first = s.process(&[reading("state", Value::UInt(1))]);
    assert_eq!(kinds(&first), vec![("equipment.status", Severity::Info)]);
    let fault = s.process(&[reading("state", Value::UInt(3))]);
    assert_eq!(
        kinds(&fault),
        vec![
            ("equipment.status", Severity::Warn),
            ("equipment.fault", Severity::Warn)
        ]
    );
    assert_eq!(fault[1].event_data["state"], "fault");
    let back = s.process(&[reading("state", Value::UInt(1))]);
    assert_eq!(kinds(&back), vec![("equipment.status", Severity::Info)]);
    let id = fault[0].correlation_id.unwrap();
    assert_eq!(fault[1].correlation_id, Some(id));
    assert_eq!(back[0].correlation_id, Some(id));
    assert_eq!(back[0].event_data["previous_state"], "fault");
}

#[test]
fn each_new_part_gets_a_quality_check_and_failures_are_warnings() {
    let mut s = station();
    let out = s.process(&[
        reading("verdict", Value::Bool(true)),
        reading("panel", Value::Text("P-0001".into())),
    ]);
    assert_eq!(kinds(&out), vec![("quality.check", Severity::Info)]);
    assert_eq!(
        out[0].event_data["part_id"], "P-0001",
        "part ids are taken first"
    );
    let out = s.process(&[
        reading("panel", Value::Text("P-0002".into())),
        reading("verdict", Value::Bool(true)),
    ]);
    assert_eq!(kinds(&out), vec![("quality.check", Severity::Info)]);
    assert!(s
        .process(&[
            reading("panel", Value::Text("P-0002".into())),
            reading("verdict", Value::Bool(true))
        ])
        .is_empty());
    let out = s.process(&[
        reading("panel", Value::Text("P-0003".into())),
        reading("verdict", Value::Bool(false)),
    ]);
    assert_eq!(kinds(&out), vec![("quality.check", Severity::Warn)]);
    assert_eq!(out[0].event_data["result"], "fail");
}

#[test]
fn clearing_the_alarm_enable_bit_is_alarm_suppression() {
    let mut s = station();
    s.process(&[reading("alarm_enable", Value::Bool(true))]);
    let out = s.process(&[reading("alarm_enable", Value::Bool(false))]);
    assert_eq!(
        kinds(&out),
        vec![
            ("alarm_limit.changed", Severity::Warn),
            ("alarm.suppressed", Severity::Error)
        ]
    );
}

#[test]
fn bad_quality_non_finite_and_unknown_tags_are_counted_not_evaluated() {
    let mut s = station();
    s.process(&[reading("zone1_sp", Value::Float(235.0))]);
    let mut bad = reading("zone1_sp", Value::Float(999.0));
    bad.quality = Quality::Bad;
    let out = s.process(&[
        bad,
        reading("zone1_sp", Value::Float(f64::NAN)),
        reading("nope", Value::UInt(1)),
    ]);
    assert!(out.is_empty());
    let c = s.counters();
    assert_eq!((c.bad_quality, c.not_finite, c.unknown_tag), (1, 1, 1));
    // The baseline is untouched: the next good equal value raises nothing.
    assert!(s
        .process(&[reading("zone1_sp", Value::Float(235.0))])
        .is_empty());
}

#[test]
fn severity_overrides_from_config_apply() {
    let mut s = StationRules::new(
        Arc::from("gw-1"),
        Arc::from("oven-1"),
        Arc::new(SeverityMap::with_overrides(BTreeMap::from([(
            "setpoint.changed".to_owned(),
            Severity::Critical,
        )]))),
        vec![tag("sp", TagRole::Setpoint)],
    );
    s.process(&[reading("sp", Value::UInt(1))]);
    let out = s.process(&[reading("sp", Value::UInt(2))]);
    assert_eq!(kinds(&out), vec![("setpoint.changed", Severity::Critical)]);
}
