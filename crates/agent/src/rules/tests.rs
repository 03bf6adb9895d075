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
pub(super) fn kinds(events: &[SecurityEvent]) -> Vec<(&str, Severity)> {
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
            EventType::SetpointChanged,
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
    assert!(
        s.observe(&poll(vec![], true, vec![]), at(405)).is_empty(),
        "an answer without data is no recovery"
    );
    let temp = reading_at("zone1_temp", Value::Float(200.0), 410);
    let out = s.observe(&poll(vec![temp], true, vec![]), at(410));
    assert_eq!(kinds(&out)[0], ("device.recovered", Severity::Info));
    assert_eq!(out[0].correlation_id, Some(id));
    assert_eq!(out[0].event_data["down_for_s"], 410.0);
}

#[test]
fn a_server_refusing_its_certificate_is_cert_invalid_and_neither_down_nor_recovered() {
    let mut s = measured(RuleSettings::default());
    let down = || poll(vec![], false, vec![SourceError::Timeout(1000)]);
    for t in 0..3 {
        s.observe(&down(), at(t));
    }
    // The server is back with a certificate the agent does not trust: it answers (reachable)
    // but delivers nothing.
    let refused = || {
        poll(
            vec![reading_at(reserved::OFFERS_NONE, Value::Bool(false), 10)],
            true,
            vec![SourceError::Certificate(
                "untrusted; trust it with `linesentry pki trust`".into(),
            )],
        )
    };
    let out = s.observe(&refused(), at(10));
    assert_eq!(kinds(&out), vec![("cert.invalid", Severity::Error)]);
    assert!(
        s.observe(&refused(), at(11)).is_empty(),
        "once, and no device.recovered"
    );
    let temp = reading_at("zone1_temp", Value::Float(200.0), 20);
    let out = s.observe(&poll(vec![temp], true, vec![]), at(20));
    assert_eq!(kinds(&out)[0], ("device.recovered", Severity::Info));

    // First contact refused: cert.invalid at the first attempt, no outage at all.
    let mut s = measured(RuleSettings::default());
    let out = s.observe(&refused(), at(0));
    assert_eq!(kinds(&out), vec![("cert.invalid", Severity::Error)]);
    for t in 1..10 {
        assert!(s.observe(&refused(), at(t)).is_empty());
    }
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
fn rejections_counted_in_both_server_counters_are_counted_once() {
    // Part 5: RejectedSessionCount includes SecurityRejectedSessionCount.
    let mut s = measured(RuleSettings {
        auth_burst: 5,
        ..RuleSettings::default()
    });
    let both = |total: u64, security: u64, t: i64| {
        [
            reading_at(
                reserved::SECURITY_REJECTED_SESSIONS,
                Value::UInt(security),
                t,
            ),
            reading_at(reserved::REJECTED_SESSIONS, Value::UInt(total), t),
        ]
    };
    assert!(s.process(&both(10, 4, 0)).is_empty());
    let out = s.process(&both(13, 7, 10));
    assert_eq!(kinds(&out), vec![("auth.failed", Severity::Warn)]);
    assert_eq!(out[0].event_data["rejected_sessions"], 3);
    assert_eq!(out[0].event_data["security_rejected_sessions"], 3);
    assert_eq!(out[0].event_data["failures_in_window"], 3, "three, not six");
    let out = s.process(&both(15, 7, 20));
    assert_eq!(
        kinds(&out),
        vec![
            ("auth.failed", Severity::Warn),
            ("security.violation", Severity::Error)
        ],
        "the fifth rejection, not the tenth, completes the burst"
    );
    assert_eq!(out[1].event_data["failures"], 5);
}

#[test]
fn the_agents_own_sessions_on_a_server_are_no_session_anomaly() {
    let mut s = measured(RuleSettings {
        session_margin: 1,
        ..RuleSettings::default()
    });
    let sessions = |total: u64, own: u64, t: i64| {
        [
            reading_at(reserved::CURRENT_SESSIONS, Value::UInt(total), t),
            reading_at(reserved::OWN_SESSIONS, Value::UInt(own), t),
        ]
    };
    assert!(s.process(&sessions(2, 1, 0)).is_empty());
    // Four more stations of this gateway connect to the same server: normal.
    assert!(s.process(&sessions(6, 5, 10)).is_empty());
    // Two sessions that are not ours: more than the margin.
    let out = s.process(&sessions(8, 5, 20));
    assert_eq!(kinds(&out), vec![("session.anomaly", Severity::Warn)]);
    assert_eq!(out[0].event_data["other_sessions"], 3);
    assert_eq!(out[0].event_data["own_sessions"], 5);
    assert_eq!(out[0].event_data["baseline"], 1);
}

#[test]
fn a_firmware_change_seen_by_identification_and_build_info_is_one_event_with_both() {
    let mut s = measured(RuleSettings::default());
    let with = |rev: &str, t: i64| PollResult {
        identity: Some(identity("Acme", "P-200", rev)),
        ..poll(
            vec![reading_at(
                reserved::SOFTWARE_VERSION,
                Value::Text(rev.into()),
                t,
            )],
            true,
            vec![],
        )
    };
    assert!(s.observe(&with("2.4.1", 0), at(0)).is_empty());
    let out = s.observe(&with("2.5.0", 10), at(10));
    assert_eq!(kinds(&out), vec![("firmware.changed", Severity::Error)]);
    let data = &out[0].event_data;
    assert_eq!(data["value"], "2.5.0");
    assert_eq!(data["previous"], "2.4.1");
    assert_eq!(data["sources"]["device_identification"]["value"], "2.5.0");
    assert_eq!(data["sources"]["build_info"]["previous"], "2.4.1");
    assert!(s.observe(&with("2.5.0", 20), at(20)).is_empty());
}

#[test]
fn a_firmware_tag_and_the_identification_read_later_are_one_update() {
    let mut s = station();
    let fw = |v: &str| reading("fw", Value::Text(v.into()));
    let ident = |rev: &str| PollResult {
        identity: Some(identity("Acme", "P-200", rev)),
        ..poll(vec![], true, vec![])
    };
    s.observe(&poll(vec![fw("2.4.1")], true, vec![]), at(0));
    s.observe(&ident("2.4.1"), at(1));
    let out = s.observe(&poll(vec![fw("2.5.0")], true, vec![]), at(10));
    assert_eq!(kinds(&out), vec![("firmware.changed", Severity::Error)]);
    assert_eq!(out[0].event_data["tag"], "fw");
    assert_eq!(
        out[0].event_data["sources"]["firmware_tag"]["value"],
        "2.5.0"
    );
    // The identification, read a few polls later, shows the same update: no second event.
    assert!(s.observe(&ident("2.5.0"), at(15)).is_empty());
    assert_eq!(s.counters().firmware_merged, 1);
    // A later update through the tag is a new one.
    let out = s.observe(&poll(vec![fw("2.6.0")], true, vec![]), at(400));
    assert_eq!(kinds(&out), vec![("firmware.changed", Severity::Error)]);
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

// ---- trend rule (quality.anomaly, Nelson rule 3 towards a limit) --------------------------

/// `zone1_temp` (limits 0-300 degC, default 6 values, 5 % margin = 15 degC) read once a
/// second with `values`, tuned by `rules`; the `quality.anomaly` events, each with the index
/// of the reading that raised it.
fn trend_run(rules: TagRules, values: &[f64]) -> Vec<(usize, SecurityEvent)> {
    let mut s = StationRules::new(
        Arc::from("gw-1"),
        Arc::from("oven-1"),
        Arc::new(SeverityMap::default()),
        vec![RuleTag {
            unit: Some("degC".into()),
            limits: Some((0.0, 300.0)),
            rules,
            ..tag("zone1_temp", TagRole::Measurement)
        }],
    );
    let mut found = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let secs = i64::try_from(i).unwrap();
        for e in s.process(&[reading_at("zone1_temp", Value::Float(*v), secs)]) {
            if e.event_type == "quality.anomaly" {
                found.push((i, e));
            }
        }
    }
    found
}

fn trend_data(
    value: f64,
    direction: &str,
    (points, first): (u32, f64),
    towards: &str,
    beyond: bool,
    (margin, rule): (f64, &str),
) -> Json {
    json!({
        "tag": "zone1_temp",
        "value": value,
        "unit": "degC",
        "attack": ["T0831"],
        "kind": "trend",
        "direction": direction,
        "run": { "points": points, "first": first, "last": value },
        "limit": { "min": 0.0, "max": 300.0 },
        "towards": towards,
        "beyond_limit": beyond,
        "margin": margin,
        "rule": rule,
    })
}

/// (case, tag rules, values, [(index of the reading that raises it, event_data)])
type TrendCase = (&'static str, TagRules, Vec<f64>, Vec<(usize, Json)>);

const RISING_6: &str =
    "6 values in a row rising, the last within 5 % of the limits' span of max (300) or beyond";

#[test]
fn a_run_of_values_trending_to_a_limit_is_a_quality_anomaly_with_the_run_and_the_limit() {
    let falling_6 =
        "6 values in a row falling, the last within 5 % of the limits' span of min (0) or beyond";
    let tight = TagRules {
        trend_points: Some(3),
        trend_margin_percent: Some(0.0),
        ..TagRules::default()
    };
    let cases: Vec<TrendCase> = vec![
        (
            "six rising values, the last within the margin",
            TagRules::default(),
            vec![250.0, 260.0, 270.0, 280.0, 286.0, 290.0],
            vec![(
                5,
                trend_data(290.0, "rising", (6, 250.0), "max", false, (15.0, RISING_6)),
            )],
        ),
        (
            "five rising values are no run, even beyond the limit",
            TagRules::default(),
            vec![270.0, 280.0, 286.0, 295.0, 305.0],
            vec![],
        ),
        (
            "repeated values neither extend nor break the run",
            TagRules::default(),
            vec![250.0, 250.0, 260.0, 260.0, 270.0, 280.0, 286.0, 286.0, 290.0],
            vec![(
                8,
                trend_data(290.0, "rising", (6, 250.0), "max", false, (15.0, RISING_6)),
            )],
        ),
        (
            "a step back starts a new run from the value before it",
            TagRules::default(),
            vec![250.0, 260.0, 270.0, 265.0, 280.0, 286.0, 290.0, 295.0, 296.0],
            vec![(
                8,
                trend_data(296.0, "rising", (6, 265.0), "max", false, (15.0, RISING_6)),
            )],
        ),
        (
            "six falling values towards the lower limit",
            TagRules::default(),
            vec![50.0, 40.0, 30.0, 20.0, 14.0, 10.0],
            vec![(
                5,
                trend_data(10.0, "falling", (6, 50.0), "min", false, (15.0, falling_6)),
            )],
        ),
        (
            "a long run that ends mid-range is no anomaly",
            TagRules::default(),
            (0..10).map(|i| 100.0 + 10.0 * f64::from(i)).collect(),
            vec![],
        ),
        (
            "a run rising away from the lower limit is no anomaly",
            TagRules::default(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            vec![],
        ),
        (
            "per-tag tuning: three values or more, only beyond the limit",
            tight.clone(),
            vec![280.0, 290.0, 299.0, 301.0],
            vec![(
                3,
                trend_data(
                    301.0,
                    "rising",
                    (4, 280.0),
                    "max",
                    true,
                    (
                        0.0,
                        "3 values in a row rising, the last within 0 % of the limits' span of max (300) or beyond",
                    ),
                ),
            )],
        ),
        (
            "per-tag tuning: a run of three ending at the limit is not beyond it",
            tight,
            vec![280.0, 290.0, 300.0],
            vec![],
        ),
    ];
    for (case, rules, values, expected) in cases {
        let found = trend_run(rules, &values);
        let got: Vec<(usize, Json)> = found
            .iter()
            .map(|(i, e)| (*i, Json::Object(e.event_data.clone())))
            .collect();
        assert_eq!(got, expected, "{case}");
        for (_, e) in &found {
            assert_eq!(e.severity, Severity::Warn, "{case}");
            assert!(e.correlation_id.is_some(), "{case}: an episode id");
        }
    }
}

#[test]
fn a_trend_is_reported_once_until_the_value_is_back_in_the_normal_band() {
    let mut values = vec![250.0, 260.0, 270.0, 280.0, 286.0, 290.0];
    // Still rising, then beyond the limit and falling a little: the same episode.
    values.extend([291.0, 292.0, 293.0, 294.0, 295.0, 296.0, 310.0, 305.0]);
    // Back in the normal band, then a climb again: a new episode, its run from 200.
    values.push(200.0);
    values.extend([250.0, 260.0, 270.0, 280.0, 286.0]);
    let found = trend_run(TagRules::default(), &values);
    let at: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
    assert_eq!(at, vec![5, 19]);
    assert_eq!(found[1].1.event_data["run"]["first"], json!(200.0));
    assert_ne!(found[0].1.correlation_id, found[1].1.correlation_id);
}

#[test]
fn a_measurement_without_limits_has_no_trend_rule_and_station_tuning_applies_to_the_rest() {
    let mut flow = StationRules::new(
        Arc::from("gw-1"),
        Arc::from("oven-1"),
        Arc::new(SeverityMap::default()),
        vec![tag("flow", TagRole::Measurement)],
    );
    for i in 0..20 {
        let v = Value::Float(100.0 + 50.0 * f64::from(i));
        let out = flow.process(&[reading_at("flow", v, i64::from(i))]);
        assert!(out.iter().all(|e| e.event_type != "quality.anomaly"));
    }
    // `zone1_temp` has no override: the station's three values and no margin apply.
    let mut s = measured(RuleSettings {
        trend_points: 3,
        trend_margin_percent: 0.0,
        ..RuleSettings::default()
    });
    let mut raised = Vec::new();
    for (i, v) in [290.0, 299.0, 300.0, 301.0].into_iter().enumerate() {
        let out = s.process(&[reading_at(
            "zone1_temp",
            Value::Float(v),
            i64::try_from(i).unwrap(),
        )]);
        if out.iter().any(|e| e.event_type == "quality.anomaly") {
            raised.push(i);
        }
    }
    assert_eq!(raised, vec![3], "at the limit is not beyond it");
}

// ---- silent alarms (alarm.suppressed: a value beyond its alarm limit, no alarm) ----------

/// A press: `die_temp` (limits 20-250 degC) alarms above `die_temp_high` and below
/// `die_temp_low` on `press_alarm` (the station's only alarm-active tag, not named).
fn press(grace_s: u64) -> StationRules {
    StationRules::new(
        Arc::from("gw-1"),
        Arc::from("press-1"),
        Arc::new(SeverityMap::default()),
        vec![
            RuleTag {
                unit: Some("degC".into()),
                limits: Some((20.0, 250.0)),
                rules: TagRules {
                    alarm_high: Some("die_temp_high".into()),
                    alarm_low: Some("die_temp_low".into()),
                    ..TagRules::default()
                },
                ..tag("die_temp", TagRole::Measurement)
            },
            tag("die_temp_high", TagRole::AlarmLimit),
            tag("die_temp_low", TagRole::AlarmLimit),
            tag("press_alarm", TagRole::AlarmActive),
        ],
    )
    .with_settings(RuleSettings {
        alarm_grace: std::time::Duration::from_secs(grace_s),
        ..RuleSettings::default()
    })
}

/// One poll: (seconds, die_temp, press_alarm); the limits are 150 and 60 from the start.
type Poll = (i64, f64, bool);

/// (case, grace s, polls, [(seconds of the poll that raises it, event_data)])
type SilentCase = (&'static str, u64, Vec<Poll>, Vec<(i64, Json)>);

fn silent_alarms(grace_s: u64, polls: &[Poll]) -> Vec<(i64, SecurityEvent)> {
    let mut s = press(grace_s);
    let mut found = Vec::new();
    for (i, &(secs, temp, alarm)) in polls.iter().enumerate() {
        let mut readings = vec![
            reading_at("die_temp", Value::Float(temp), secs),
            reading_at("press_alarm", Value::Bool(alarm), secs),
        ];
        if i == 0 {
            readings.push(reading_at("die_temp_high", Value::Float(150.0), secs));
            readings.push(reading_at("die_temp_low", Value::Float(60.0), secs));
        }
        for e in s.process(&readings) {
            if e.event_type == "alarm.suppressed" {
                found.push((secs, e));
            }
        }
    }
    found
}

fn silent_data(value: f64, side: &str, limit: f64, alarm: bool, for_s: f64, grace: f64) -> Json {
    json!({
        "tag": "die_temp",
        "value": value,
        "unit": "degC",
        "attack": ["T0878"],
        "reason": "no_alarm_beyond_limit",
        "limit": limit,
        "limit_side": side,
        "limit_tag": format!("die_temp_{side}"),
        "alarm_tag": "press_alarm",
        "alarm_value": alarm,
        "unalarmed_for_s": for_s,
        "grace_s": grace,
    })
}

#[test]
fn a_value_beyond_its_alarm_limit_with_the_alarm_off_past_the_grace_is_alarm_suppression() {
    let cases: Vec<SilentCase> = vec![
        (
            "beyond the high limit, no alarm for the grace: once",
            10,
            vec![
                (0, 140.0, false),
                (5, 155.0, false),
                (10, 158.0, false),
                (15, 160.0, false),
                (20, 161.0, false),
                (40, 162.0, false),
            ],
            vec![(15, silent_data(160.0, "high", 150.0, false, 10.0, 10.0))],
        ),
        (
            "the alarm shows within the grace: nothing",
            10,
            vec![
                (0, 140.0, false),
                (5, 155.0, false),
                (8, 158.0, true),
                (30, 160.0, true),
                (40, 140.0, false),
            ],
            vec![],
        ),
        (
            "the alarm cleared while the value stays beyond: the grace counts from then",
            10,
            vec![
                (0, 140.0, false),
                (5, 155.0, true),
                (20, 156.0, false),
                (25, 157.0, false),
                (30, 157.0, false),
            ],
            vec![(30, silent_data(157.0, "high", 150.0, false, 10.0, 10.0))],
        ),
        (
            "each excursion beyond the limit is an episode",
            10,
            vec![
                (0, 155.0, false),
                (10, 155.0, false),
                (20, 140.0, false),
                (30, 152.0, false),
                (35, 152.0, false),
                (40, 153.0, false),
            ],
            vec![
                (10, silent_data(155.0, "high", 150.0, false, 10.0, 10.0)),
                (40, silent_data(153.0, "high", 150.0, false, 10.0, 10.0)),
            ],
        ),
        (
            "below the low limit",
            0,
            vec![(0, 100.0, false), (1, 55.0, false), (2, 50.0, false)],
            vec![(1, silent_data(55.0, "low", 60.0, false, 0.0, 0.0))],
        ),
        (
            "at the limit is not beyond it",
            0,
            vec![(0, 150.0, false), (1, 60.0, false)],
            vec![],
        ),
        (
            "within the grace the value returns: nothing",
            10,
            vec![
                (0, 140.0, false),
                (1, 155.0, false),
                (9, 149.0, false),
                (30, 149.0, false),
            ],
            vec![],
        ),
    ];
    for (case, grace, polls, expected) in cases {
        let found = silent_alarms(grace, &polls);
        let got: Vec<(i64, Json)> = found
            .iter()
            .map(|(t, e)| (*t, Json::Object(e.event_data.clone())))
            .collect();
        assert_eq!(got, expected, "{case}");
        for (_, e) in &found {
            assert_eq!(e.severity, Severity::Error, "{case}");
            assert!(e.correlation_id.is_some(), "{case}");
        }
        if found.len() == 2 {
            assert_ne!(
                found[0].1.correlation_id, found[1].1.correlation_id,
                "{case}"
            );
        }
    }
}

#[test]
fn unknown_limits_bad_readings_and_unreachable_polls_decide_no_silent_alarm() {
    // No limit read yet: nothing, however long the value is high.
    let mut s = press(0);
    for secs in 0..5 {
        let out = s.process(&[
            reading_at("die_temp", Value::Float(200.0), secs),
            reading_at("press_alarm", Value::Bool(false), secs),
        ]);
        assert!(out.iter().all(|e| e.event_type != "alarm.suppressed"));
    }
    // An alarm tag with bad quality shows nothing either way.
    let mut s = press(0);
    let bad = Reading {
        quality: Quality::Bad,
        ..reading_at("press_alarm", Value::Bool(false), 1)
    };
    let out = s.process(&[
        reading_at("die_temp_high", Value::Float(150.0), 1),
        reading_at("die_temp", Value::Float(200.0), 1),
        bad,
    ]);
    assert!(out.iter().all(|e| e.event_type != "alarm.suppressed"));
    // An unreachable device: the last values are not current, so the grace decides nothing.
    let mut s = press(5);
    s.process(&[
        reading_at("die_temp_high", Value::Float(150.0), 0),
        reading_at("die_temp", Value::Float(200.0), 0),
        reading_at("press_alarm", Value::Bool(false), 0),
    ]);
    let down = poll(vec![], false, vec![SourceError::Timeout(1000)]);
    let out = s.observe(&down, at(10));
    assert!(out.iter().all(|e| e.event_type != "alarm.suppressed"));
    let out = s.observe(&poll(vec![], true, vec![]), at(11));
    assert_eq!(
        out.iter()
            .filter(|e| e.event_type == "alarm.suppressed")
            .count(),
        1,
        "reachable again, with the value still high and the alarm off"
    );
}

#[test]
fn a_lowered_alarm_limit_that_the_alarm_ignores_is_alarm_suppression_too() {
    let mut s = press(0);
    s.process(&[
        reading_at("die_temp_high", Value::Float(150.0), 0),
        reading_at("die_temp", Value::Float(140.0), 0),
        reading_at("press_alarm", Value::Bool(false), 0),
    ]);
    let out = s.process(&[reading_at("die_temp_high", Value::Float(130.0), 1)]);
    assert_eq!(
        kinds(&out),
        vec![
            ("alarm_limit.changed", Severity::Warn),
            ("alarm.suppressed", Severity::Error)
        ]
    );
    assert_eq!(out[1].event_data["limit"], json!(130.0));
    assert_eq!(out[1].event_data["value"], json!(140.0));
}

#[test]
fn a_measurement_names_its_own_alarm_tag_when_a_station_has_several() {
    let mut s = StationRules::new(
        Arc::from("gw-1"),
        Arc::from("press-1"),
        Arc::new(SeverityMap::default()),
        vec![
            RuleTag {
                rules: TagRules {
                    alarm_high: Some("limit".into()),
                    alarm_active: Some("temp_alarm".into()),
                    ..TagRules::default()
                },
                ..tag("temp", TagRole::Measurement)
            },
            tag("limit", TagRole::AlarmLimit),
            tag("horn", TagRole::AlarmActive),
            tag("temp_alarm", TagRole::AlarmActive),
        ],
    )
    .with_settings(RuleSettings {
        alarm_grace: std::time::Duration::ZERO,
        ..RuleSettings::default()
    });
    let out = s.process(&[
        reading_at("limit", Value::Float(100.0), 0),
        reading_at("temp", Value::Float(120.0), 0),
        reading_at("horn", Value::Bool(true), 0),
        reading_at("temp_alarm", Value::UInt(0), 0),
    ]);
    let e = out
        .iter()
        .find(|e| e.event_type == "alarm.suppressed")
        .expect("the horn is not this measurement's alarm");
    assert_eq!(e.event_data["alarm_tag"], "temp_alarm");
    assert_eq!(e.event_data["alarm_value"], json!(0));
}
