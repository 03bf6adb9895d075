use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn tag(name: &str, role: TagRole) -> RuleTag {
    RuleTag {
        name: name.into(),
        role,
        unit: None,
        states: BTreeMap::new(),
        limits: None,
        rules: TagRules::default(),
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
fn bad_quality_raises_one_stale_event_and_non_finite_and_unknown_tags_are_counted() {
    let mut s = station();
    s.process(&[reading("zone1_sp", Value::Float(235.0))]);
    let mut bad = reading("zone1_sp", Value::Float(999.0));
    bad.quality = Quality::Bad;
    let out = s.process(&[
        bad.clone(),
        reading("zone1_sp", Value::Float(f64::NAN)),
        reading("nope", Value::UInt(1)),
    ]);
    assert_eq!(kinds(&out), vec![("value.stale", Severity::Warn)]);
    assert_eq!(out[0].event_data["reason"], "bad_quality");
    assert_eq!(out[0].event_data["quality"], "bad");
    assert!(s.process(&[bad]).is_empty(), "once per episode");
    let c = s.counters();
    assert_eq!((c.bad_quality, c.not_finite, c.unknown_tag), (2, 1, 1));
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

// ---- time-based rules: helpers with explicit times ---------------------------------------

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
}

fn reading_at(tag: &str, value: Value, secs: i64) -> Reading {
    Reading {
        received: at(secs),
        ..reading(tag, value)
    }
}

fn poll(readings: Vec<Reading>, reachable: bool, errors: Vec<SourceError>) -> PollResult {
    PollResult {
        readings,
        reachable,
        errors,
        identity: None,
    }
}

fn measured(settings: RuleSettings) -> StationRules {
    StationRules::new(
        Arc::from("gw-1"),
        Arc::from("oven-1"),
        Arc::new(SeverityMap::default()),
        vec![
            RuleTag {
                unit: Some("degC".into()),
                limits: Some((0.0, 300.0)),
                ..tag("zone1_temp", TagRole::Measurement)
            },
            tag("strokes", TagRole::Counter),
            RuleTag {
                states: states(&[(0, "idle"), (1, "run"), (3, "fault")]),
                ..tag("state", TagRole::Status)
            },
            tag("key_switch", TagRole::ChangeWindow),
            tag("zone1_sp", TagRole::Setpoint),
            RuleTag {
                states: states(&[(1, "RUN"), (2, "PROGRAM")]),
                ..tag("mode", TagRole::Mode)
            },
            tag("verdict", TagRole::QualityResult),
        ],
    )
    .with_settings(settings)
}

#[test]
fn an_outage_is_unreachable_after_k_failures_escalates_and_recovers_with_one_correlation() {
    let mut s = measured(RuleSettings::default());
    let down = || poll(vec![], false, vec![SourceError::Timeout(1000)]);
    assert!(s.observe(&down(), at(0)).is_empty());
    assert!(s.observe(&down(), at(1)).is_empty());
    let out = s.observe(&down(), at(2));
    assert_eq!(kinds(&out), vec![("device.unreachable", Severity::Warn)]);
    assert_eq!(out[0].event_data["failed_polls"], 3);
    assert!(out[0].event_data["reason"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    let id = out[0].correlation_id.unwrap();
    assert!(s.observe(&down(), at(100)).is_empty());
    let out = s.observe(&down(), at(301));
    assert_eq!(kinds(&out), vec![("device.unreachable", Severity::Error)]);
    assert_eq!(out[0].event_data["escalated"], true);
    assert_eq!(out[0].correlation_id, Some(id));
    assert!(s.observe(&down(), at(400)).is_empty(), "escalated once");
    let out = s.observe(&poll(vec![], true, vec![]), at(410));
    assert_eq!(kinds(&out), vec![("device.recovered", Severity::Info)]);
    assert_eq!(out[0].correlation_id, Some(id));
    assert_eq!(out[0].event_data["down_for_s"], 410.0);
}

#[test]
fn a_single_failed_poll_is_not_an_outage() {
    let mut s = measured(RuleSettings::default());
    s.observe(
        &poll(vec![], false, vec![SourceError::Timeout(1000)]),
        at(0),
    );
    assert!(s.observe(&poll(vec![], true, vec![]), at(1)).is_empty());
}

#[test]
fn five_auth_failures_in_five_minutes_are_a_security_violation_sharing_the_burst_id() {
    let mut s = measured(RuleSettings::default());
    let fail = || {
        poll(
            vec![],
            false,
            vec![SourceError::Auth("BadUserAccessDenied".into())],
        )
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let out = s.observe(&fail(), at(i * 60));
        let auth: Vec<_> = out
            .iter()
            .filter(|e| e.event_type == "auth.failed")
            .collect();
        assert_eq!(auth.len(), 1);
        ids.push(auth[0].correlation_id.unwrap());
    }
    let out = s.observe(&fail(), at(4 * 60));
    let violation = out
        .iter()
        .find(|e| e.event_type == "security.violation")
        .unwrap();
    assert_eq!(violation.severity, Severity::Error);
    assert_eq!(violation.event_data["kind"], "auth_burst");
    assert_eq!(violation.event_data["failures"], 5);
    assert!(ids
        .iter()
        .all(|id| *id == violation.correlation_id.unwrap()));
    assert_eq!(
        violation.event_data["attack"],
        serde_json::json!(["T0859", "T0846"])
    );
}

#[test]
fn auth_failures_spread_wider_than_the_window_are_no_burst() {
    let mut s = measured(RuleSettings::default());
    for i in 0..10 {
        let out = s.observe(
            &poll(vec![], false, vec![SourceError::Auth("x".into())]),
            at(i * 120),
        );
        assert!(
            out.iter().all(|e| e.event_type != "security.violation"),
            "at {i}"
        );
    }
}

#[test]
fn rejected_session_counters_going_up_are_auth_failures_and_going_back_a_restart() {
    let mut s = measured(RuleSettings::default());
    let r = |v: u64, t: i64| reading_at(reserved::SECURITY_REJECTED_SESSIONS, Value::UInt(v), t);
    assert!(s.process(&[r(10, 0)]).is_empty());
    let out = s.process(&[r(16, 10)]);
    assert_eq!(
        kinds(&out),
        vec![
            ("auth.failed", Severity::Warn),
            ("security.violation", Severity::Error)
        ]
    );
    assert_eq!(out[0].event_data["rejected_sessions"], 6);
    let out = s.process(&[r(2, 20)]);
    assert_eq!(kinds(&out), vec![("device.restarted", Severity::Warn)]);
}

#[test]
fn a_burst_of_modbus_exceptions_is_a_scan() {
    let mut s = measured(RuleSettings {
        exception_burst: 4,
        ..RuleSettings::default()
    });
    let exc = |code: u8| SourceError::Exception {
        code,
        name: "x".into(),
        what: "hr 100".into(),
    };
    assert!(s
        .observe(&poll(vec![], true, vec![exc(2), exc(2)]), at(0))
        .is_empty());
    assert!(
        s.observe(&poll(vec![], true, vec![exc(4)]), at(1))
            .is_empty(),
        "04 is a device failure, not a probe"
    );
    let out = s.observe(&poll(vec![], true, vec![exc(1), exc(2)]), at(2));
    assert_eq!(kinds(&out), vec![("security.violation", Severity::Error)]);
    assert_eq!(out[0].event_data["kind"], "modbus_scan");
    assert_eq!(
        out[0].event_data["codes"],
        serde_json::json!(["0x01", "0x02"])
    );
}

#[test]
fn an_untrusted_certificate_is_reported_once_until_it_is_fixed() {
    let mut s = measured(RuleSettings::default());
    let cert = || {
        poll(
            vec![],
            false,
            vec![SourceError::Certificate("untrusted".into())],
        )
    };
    assert_eq!(
        kinds(&s.observe(&cert(), at(0))),
        vec![("cert.invalid", Severity::Error)]
    );
    assert!(s.observe(&cert(), at(1)).is_empty());
    s.observe(&poll(vec![], true, vec![]), at(2));
    assert_eq!(
        kinds(&s.observe(&cert(), at(3))),
        vec![("cert.invalid", Severity::Error)]
    );
}

fn identity(vendor: &str, product: &str, revision: &str) -> DeviceIdentity {
    DeviceIdentity {
        vendor: Some(vendor.into()),
        product_code: Some(product.into()),
        revision: Some(revision.into()),
        ..DeviceIdentity::default()
    }
}

#[test]
fn identity_is_learned_then_firmware_and_identity_changes_are_raised() {
    let mut s = measured(RuleSettings::default());
    let with = |id: DeviceIdentity| PollResult {
        identity: Some(id),
        ..poll(vec![], true, vec![])
    };
    assert!(s
        .observe(&with(identity("Acme", "P-200", "2.4.1")), at(0))
        .is_empty());
    assert!(s
        .observe(&with(identity("Acme", "P-200", "2.4.1")), at(1))
        .is_empty());
    let out = s.observe(&with(identity("Acme", "P-200", "2.5.0")), at(2));
    assert_eq!(kinds(&out), vec![("firmware.changed", Severity::Error)]);
    assert_eq!(out[0].event_data["previous"], "2.4.1");
    let out = s.observe(&with(identity("Evil", "P-200", "2.5.0")), at(3));
    assert_eq!(kinds(&out), vec![("identity.changed", Severity::Critical)]);
    assert_eq!(out[0].event_data["changes"]["vendor"]["previous"], "Acme");
    assert_eq!(out[0].event_data["attack"], serde_json::json!(["T0830"]));
}

#[test]
fn opc_ua_server_status_drives_restart_mode_firmware_sessions_policy_and_clock_rules() {
    let mut s = measured(RuleSettings::default());
    let first = [
        reading_at(reserved::SERVER_STATE, Value::UInt(0), 0),
        reading_at(
            reserved::SERVER_START_TIME,
            Value::Text("2026-11-01T00:00:00Z".into()),
            0,
        ),
        reading_at(reserved::SOFTWARE_VERSION, Value::Text("1.2.0".into()), 0),
        reading_at(reserved::CURRENT_SESSIONS, Value::UInt(2), 0),
        reading_at(
            reserved::BEST_POLICY,
            Value::Text("Basic256Sha256".into()),
            0,
        ),
        reading_at(reserved::OFFERS_NONE, Value::Bool(false), 0),
    ];
    assert!(
        s.process(&first).is_empty(),
        "{:?}",
        kinds(&s.process(&first))
    );
    let out = s.process(&[
        reading_at(reserved::SERVER_STATE, Value::UInt(4), 10),
        reading_at(
            reserved::SERVER_START_TIME,
            Value::Text("2026-11-27T10:00:00Z".into()),
            10,
        ),
        reading_at(reserved::SOFTWARE_VERSION, Value::Text("1.3.0".into()), 10),
        reading_at(reserved::CURRENT_SESSIONS, Value::UInt(7), 10),
        reading_at(
            reserved::BEST_POLICY,
            Value::Text("Basic128Rsa15".into()),
            10,
        ),
        reading_at(reserved::OFFERS_NONE, Value::Bool(true), 10),
    ]);
    let mut got = kinds(&out);
    got.sort_unstable();
    assert_eq!(
        got,
        vec![
            ("device.restarted", Severity::Warn),
            ("firmware.changed", Severity::Error),
            ("mode.changed", Severity::Error),
            ("security_policy.downgraded", Severity::Warn),
            ("security_policy.downgraded", Severity::Warn),
            ("session.anomaly", Severity::Warn),
        ]
    );
    let mode = out.iter().find(|e| e.event_type == "mode.changed").unwrap();
    assert_eq!(mode.event_data["state"], "Shutdown");
}

#[test]
fn a_device_clock_far_from_ours_is_clock_skew_once() {
    let mut s = measured(RuleSettings::default());
    let device_time = at(-30).to_string();
    let out = s.process(&[reading_at(
        reserved::SERVER_CURRENT_TIME,
        Value::Text(device_time.clone()),
        0,
    )]);
    assert_eq!(kinds(&out), vec![("agent.clock_skew", Severity::Warn)]);
    assert_eq!(out[0].event_data["skew_ms"], 30_000);
    assert!(s
        .process(&[reading_at(
            reserved::SERVER_CURRENT_TIME,
            Value::Text(at(-29).to_string()),
            1
        )])
        .is_empty());
}

#[test]
fn measurements_are_reported_by_exception_with_a_heartbeat() {
    let mut s = measured(RuleSettings::default());
    let m = |v: f64, t: i64| reading_at("zone1_temp", Value::Float(v), t);
    assert_eq!(
        kinds(&s.process(&[m(200.0, 0)])),
        vec![("equipment.measurement", Severity::Debug)]
    );
    // Deadband: 1 % of the 0..300 span = 3 degC.
    assert!(s.process(&[m(202.0, 1)]).is_empty());
    assert!(s.process(&[m(198.5, 2)]).is_empty());
    let out = s.process(&[m(203.5, 3)]);
    assert_eq!(
        kinds(&out),
        vec![("equipment.measurement", Severity::Debug)]
    );
    // Quiet but changing inside the band: the heartbeat after 5 minutes.
    assert!(s.process(&[m(204.0, 100)]).is_empty());
    let out = s.process(&[m(204.5, 304)]);
    assert_eq!(
        kinds(&out),
        vec![("equipment.measurement", Severity::Debug)]
    );
}

#[test]
fn a_frozen_measurement_is_stale_once_until_it_moves() {
    let mut s = measured(RuleSettings::default());
    let m = |v: f64, t: i64| reading_at("zone1_temp", Value::Float(v), t);
    s.process(&[m(200.0, 0)]);
    assert!(s.process(&[m(200.0, 30)]).is_empty());
    let out = s.process(&[m(200.0, 61)]);
    assert_eq!(kinds(&out), vec![("value.stale", Severity::Warn)]);
    assert_eq!(out[0].event_data["reason"], "frozen");
    assert!(s.process(&[m(200.0, 90)]).is_empty());
    s.process(&[m(210.0, 100)]);
    let out = s.process(&[m(210.0, 170)]);
    assert_eq!(
        kinds(&out),
        vec![("value.stale", Severity::Warn)],
        "re-armed by the change"
    );
}

#[test]
fn a_value_that_changes_while_its_source_timestamp_stands_still_is_stale() {
    let mut s = measured(RuleSettings::default());
    let m = |v: f64, t: i64| Reading {
        source_time: Some(at(0)),
        ..reading_at("zone1_temp", Value::Float(v), t)
    };
    s.process(&[m(200.0, 0)]);
    let out = s.process(&[m(250.0, 1)]);
    let stale = out.iter().find(|e| e.event_type == "value.stale").unwrap();
    assert_eq!(stale.event_data["reason"], "source_timestamp_not_advancing");
}

#[test]
fn a_source_timestamp_standing_still_is_stale_once_until_it_advances() {
    let mut s = measured(RuleSettings::default());
    let m = |v: f64, t: i64, src: i64| Reading {
        source_time: Some(at(src)),
        ..reading_at("zone1_temp", Value::Float(v), t)
    };
    let stale = |out: &[SecurityEvent]| {
        out.iter()
            .filter(|e| e.event_type == "value.stale")
            .map(|e| e.event_data["reason"].clone())
            .collect::<Vec<_>>()
    };
    s.process(&[m(200.0, 0, 0)]);
    assert_eq!(
        stale(&s.process(&[m(230.0, 1, 0)])),
        vec!["source_timestamp_not_advancing"]
    );
    for (i, v) in [210.0, 240.0, 205.0].into_iter().enumerate() {
        let t = 2 + i64::try_from(i).unwrap();
        assert!(
            stale(&s.process(&[m(v, t, 0)])).is_empty(),
            "one per episode"
        );
    }
    assert!(stale(&s.process(&[m(235.0, 6, 6)])).is_empty(), "advancing");
    assert_eq!(
        stale(&s.process(&[m(200.0, 7, 6)])),
        vec!["source_timestamp_not_advancing"],
        "re-armed once the timestamp advanced"
    );
}

#[test]
fn a_counter_going_back_without_a_restart_is_a_counters_reset() {
    let mut s = measured(RuleSettings::default());
    s.process(&[reading_at("strokes", Value::UInt(1000), 0)]);
    assert!(s
        .process(&[reading_at("strokes", Value::UInt(1001), 1)])
        .is_empty());
    let out = s.process(&[reading_at("strokes", Value::UInt(3), 2)]);
    assert_eq!(kinds(&out), vec![("diag.counters_reset", Severity::Warn)]);
    // With a restart in the same poll it is explained, not an alarm.
    s.process(&[reading_at(
        reserved::SERVER_START_TIME,
        Value::Text("a".into()),
        3,
    )]);
    let out = s.process(&[
        reading_at(reserved::SERVER_START_TIME, Value::Text("b".into()), 4),
        reading_at("strokes", Value::UInt(0), 4),
    ]);
    assert_eq!(kinds(&out), vec![("device.restarted", Severity::Warn)]);
}

#[test]
fn the_status_repeats_as_a_heartbeat_when_nothing_changes() {
    let mut s = measured(RuleSettings::default());
    s.process(&[reading_at("state", Value::UInt(1), 0)]);
    assert!(s
        .process(&[reading_at("state", Value::UInt(1), 300)])
        .is_empty());
    let out = s.process(&[reading_at("state", Value::UInt(1), 601)]);
    assert_eq!(kinds(&out), vec![("equipment.status", Severity::Info)]);
    assert_eq!(out[0].event_data["heartbeat"], true);
}

#[test]
fn a_flapping_input_is_debounced() {
    let mut tags = vec![RuleTag {
        states: states(&[(0, "idle"), (1, "run")]),
        rules: TagRules {
            debounce: std::time::Duration::from_secs(2),
            ..TagRules::default()
        },
        ..tag("state", TagRole::Status)
    }];
    let mut s = StationRules::new(
        Arc::from("gw"),
        Arc::from("st"),
        Arc::new(SeverityMap::default()),
        std::mem::take(&mut tags),
    );
    s.process(&[reading_at("state", Value::UInt(1), 0)]);
    // A one-second blip to idle and back raises nothing.
    assert!(s
        .process(&[reading_at("state", Value::UInt(0), 1)])
        .is_empty());
    assert!(s
        .process(&[reading_at("state", Value::UInt(1), 2)])
        .is_empty());
    // Idle that holds for two seconds counts.
    assert!(s
        .process(&[reading_at("state", Value::UInt(0), 3)])
        .is_empty());
    let out = s.process(&[reading_at("state", Value::UInt(0), 5)]);
    assert_eq!(kinds(&out), vec![("equipment.status", Severity::Info)]);
    assert!(s.counters().debounced >= 2);
}

#[test]
fn changes_inside_a_change_window_are_info_and_authorised() {
    let window = ChangeWindow {
        start: at(100),
        end: at(200),
    };
    let mut s = measured(RuleSettings {
        change_windows: vec![window],
        ..RuleSettings::default()
    });
    s.process(&[
        reading_at("zone1_sp", Value::Float(100.0), 0),
        reading_at("mode", Value::UInt(1), 0),
    ]);
    let out = s.process(&[
        reading_at("zone1_sp", Value::Float(110.0), 150),
        reading_at("mode", Value::UInt(2), 150),
    ]);
    assert_eq!(
        kinds(&out),
        vec![
            ("setpoint.changed", Severity::Info),
            ("mode.changed", Severity::Info)
        ]
    );
    assert!(out.iter().all(|e| e.event_data["authorised"] == true));
    let out = s.process(&[reading_at("zone1_sp", Value::Float(120.0), 250)]);
    assert_eq!(kinds(&out), vec![("setpoint.changed", Severity::Warn)]);
}

#[test]
fn a_key_switch_tag_opens_a_change_window() {
    let mut s = measured(RuleSettings::default());
    s.process(&[
        reading_at("zone1_sp", Value::Float(100.0), 0),
        reading_at("key_switch", Value::Bool(false), 0),
    ]);
    let out = s.process(&[
        reading_at("key_switch", Value::Bool(true), 1),
        reading_at("zone1_sp", Value::Float(105.0), 1),
    ]);
    assert_eq!(kinds(&out), vec![("setpoint.changed", Severity::Info)]);
}

#[test]
fn five_failed_checks_in_the_last_twenty_are_a_quality_anomaly_once() {
    let mut s = measured(RuleSettings::default());
    let mut anomalies = 0;
    for i in 0..40 {
        let fail = i % 4 == 0; // 5 of every 20
        let out = s.process(&[reading_at("verdict", Value::Bool(!fail), i)]);
        anomalies += out
            .iter()
            .filter(|e| e.event_type == "quality.anomaly")
            .count();
    }
    assert_eq!(anomalies, 1);
}

#[test]
fn a_stored_baseline_prevents_re_alarms_and_catches_changes_made_while_away() {
    let mut s = station();
    s.process(&[
        reading("zone1_sp", Value::Float(235.0)),
        reading("checksum", Value::UInt(7)),
    ]);
    let stored = s.take_state().expect("baseline learned");
    assert!(s.take_state().is_none(), "only when it changed");
    // A restart with the same values: silence. With a changed program: an alarm.
    let mut again = station().with_baseline(Baseline::from_bytes(&stored).unwrap());
    assert!(again
        .process(&[
            reading("zone1_sp", Value::Float(235.0)),
            reading("checksum", Value::UInt(7))
        ])
        .is_empty());
    let mut again = station().with_baseline(Baseline::from_bytes(&stored).unwrap());
    let out = again.process(&[reading("checksum", Value::UInt(8))]);
    assert_eq!(kinds(&out), vec![("program.changed", Severity::Error)]);
}

#[test]
fn a_reconnect_after_an_outage_does_not_re_alarm_unchanged_values() {
    let mut s = station();
    let values = || {
        vec![
            reading("zone1_sp", Value::Float(235.0)),
            reading("mode", Value::UInt(1)),
            reading("checksum", Value::UInt(7)),
        ]
    };
    s.observe(&poll(values(), true, vec![]), at(0));
    for t in 1..10 {
        s.observe(&poll(vec![], false, vec![SourceError::Timeout(100)]), at(t));
    }
    let out = s.observe(&poll(values(), true, vec![]), at(10));
    assert_eq!(kinds(&out), vec![("device.recovered", Severity::Info)]);
}
