//! The events the tests encode.

use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};
use linesentry_siem::{BatchSignature, Chain, Exporter, Provenance};
use uuid::Uuid;

pub(crate) const PREV_HASH: &str =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A fixed exporter, so golden files do not change with the crate version.
pub(crate) fn exporter() -> Exporter {
    Exporter {
        product_version: "0.1.0".into(),
        host: "collector-1".into(),
    }
}

pub(crate) fn provenance() -> Provenance {
    Provenance {
        chain: Chain::Verified,
        signature: Some(BatchSignature {
            key_id: "3f2a9c0d1e4b5a67".into(),
            signature: "c2lnbmF0dXJlLWJ5dGVz".into(),
        }),
    }
}

/// The golden sample: a detection with every optional field set.
pub(crate) fn golden_event() -> SecurityEvent {
    let mut e = SecurityEvent::stamped(
        "gw-line3-01",
        EventType::SetpointOutOfRange,
        Timestamp::from_micros(1_796_671_800_123_456),
    )
    .station("press-01")
    .data("tag", "die_temp_sp")
    .data("value", 412.5)
    .data("limit", 380.0)
    .data("unit", "°C")
    .context("source", "modbus");
    e.id = Uuid::parse_str("019b0a5e-7d3b-7c2e-8a41-5f3e2d1c0b9a").unwrap();
    e.seq = 1042;
    e.prev_hash = Some(PREV_HASH.into());
    e.correlation_id = Some(Uuid::parse_str("019b0a5e-0000-7000-8000-000000000001").unwrap());
    e.user_id = Some("operator7".into());
    e.source_ip = Some("10.20.30.40".parse().unwrap());
    e
}

/// One event of every catalogue type, with the data its producer sets.
pub(crate) fn every_type() -> Vec<SecurityEvent> {
    EventType::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = SecurityEvent::stamped(
                "gw-line3-01",
                *t,
                Timestamp::from_micros(
                    1_796_671_800_000_000 + i64::try_from(i).unwrap() * 1_000_123,
                ),
            )
            .data("tag", "t1")
            .data("value", 1.5);
            e.seq = i as u64 + 1;
            if i % 2 == 0 {
                e = e.station("press-01");
                e.prev_hash = Some(PREV_HASH.into());
                e.user_id = Some("operator7".into());
                e.source_ip = Some("fe80::1".parse().unwrap());
            }
            if *t == EventType::ApiAccess {
                e = e
                    .data("method", "GET")
                    .data("path", "/api/v1/events")
                    .data("status", 200);
            }
            e.severity(Severity::ALL[i % 5].max(t.default_severity()))
        })
        .collect()
}

/// A string with everything a format must escape or replace.
pub(crate) const HOSTILE: &str = "a|b=c\\d\r\ne\"f]g[h^i'j\0k\u{1b}l 温度 ü \u{FEFF}=\\";

/// An event whose every free text is hostile (the encoders must cope even with what
/// `SecurityEvent::check` would refuse).
pub(crate) fn hostile_event() -> SecurityEvent {
    let mut e = SecurityEvent::stamped(
        format!("gw{HOSTILE}"),
        EventType::SecurityViolation,
        Timestamp::from_micros(1_796_671_800_000_000),
    )
    .station(HOSTILE)
    .data("note", HOSTILE)
    .data(HOSTILE, HOSTILE)
    .data("attack", serde_json::json!(["T0859", HOSTILE]))
    .context("why", HOSTILE);
    e.user_id = Some(HOSTILE.into());
    e.seq = 7;
    e
}

/// An event of a type this build does not know.
pub(crate) fn unknown_type_event() -> SecurityEvent {
    let mut e = SecurityEvent::stamped(
        "gw-line3-01",
        EventType::EquipmentStatus,
        Timestamp::from_micros(1_796_671_800_000_000),
    );
    e.event_type = "future.thing_we_do_not_know".into();
    e.seq = 9;
    e
}
