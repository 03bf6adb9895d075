//! Bytes in, a checked batch envelope out: size limits, gzip, JSON, the event schema and
//! what PostgreSQL cannot store. Pure: no I/O, the clock is a parameter.
//!
//! A batch is accepted whole or refused whole. A refusal names every offending event (index,
//! id, seq) so a sender can split the batch and set the poison events aside.

use std::borrow::Cow;
use std::io::Read as _;

use serde::Deserialize;
use serde_json::{json, Value};

use linesentry_event::integrity::{Envelope, BATCH_VERSION};
use linesentry_event::SecurityEvent;

/// What a batch may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, compressed and decompressed.
    pub max_bytes: usize,
    pub max_events: usize,
    /// How far ahead of the collector's clock an event may be (clock skew), in microseconds.
    pub max_future_micros: i64,
    /// How old an event may be, in microseconds (older months are dropped by retention).
    pub max_age_micros: i64,
}

/// One event a batch was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    pub index: usize,
    pub id: Option<String>,
    pub seq: Option<u64>,
    pub reason: String,
}

/// Why a batch was refused before any integrity check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("batch larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not valid gzip: {0}")]
    Encoding(String),
    #[error("not a batch envelope: {0}")]
    Malformed(String),
    #[error("unsupported batch_version {0}; this collector reads version {BATCH_VERSION}")]
    BatchVersion(u32),
    #[error("batch holds no events")]
    Empty,
    #[error("batch holds {count} events; the limit is {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("{} invalid event(s), first: event {}: {}", .0.len(), .0[0].index, .0[0].reason)]
    Events(Vec<BadEvent>),
}

impl Rejection {
    /// Short name, for counters and the `kind` of a quarantined batch.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::Encoding(_) => "encoding",
            Rejection::Malformed(_) => "malformed",
            Rejection::BatchVersion(_) => "batch_version",
            Rejection::Empty => "empty",
            Rejection::TooManyEvents { .. } => "too_many_events",
            Rejection::Events(_) => "invalid_events",
        }
    }

    /// The JSON body of a 4xx answer.
    pub fn to_json(&self) -> Value {
        let mut body = json!({ "error": self.kind(), "reason": self.to_string() });
        if let Rejection::Events(bad) = self {
            body["events"] = bad
                .iter()
                .map(|b| json!({ "index": b.index, "id": b.id, "seq": b.seq, "reason": b.reason }))
                .collect();
        }
        body
    }
}

/// Gunzips `body` when `gzip`, refusing anything that would exceed `limit` bytes.
pub fn decompress(body: &[u8], gzip: bool, limit: usize) -> Result<Cow<'_, [u8]>, Rejection> {
    if body.len() > limit {
        return Err(Rejection::TooLarge { limit });
    }
    if !gzip {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Rejection::Encoding(e.to_string()))?;
    if out.len() > limit {
        return Err(Rejection::TooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

/// True when `bytes` starts with the gzip magic number (MQTT has no content encoding).
pub fn looks_gzipped(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Parses and checks an envelope. The signature is not checked here (`ingest::verify`
/// does); `now_micros` is the collector's clock.
pub fn decode(bytes: &[u8], limits: &Limits, now_micros: i64) -> Result<Envelope, Rejection> {
    if bytes.len() > limits.max_bytes {
        return Err(Rejection::TooLarge {
            limit: limits.max_bytes,
        });
    }
    // Fast path: the whole envelope at once. Only a failure pays for the per-event
    // diagnosis below.
    let envelope = match Envelope::parse(bytes) {
        Ok(env) => env,
        Err(whole) => return Err(diagnose(bytes, &whole)),
    };
    if envelope.batch_version != BATCH_VERSION {
        return Err(Rejection::BatchVersion(envelope.batch_version));
    }
    if envelope.events.is_empty() {
        return Err(Rejection::Empty);
    }
    if envelope.events.len() > limits.max_events {
        return Err(Rejection::TooManyEvents {
            count: envelope.events.len(),
            limit: limits.max_events,
        });
    }
    let bad: Vec<BadEvent> = envelope
        .events
        .iter()
        .enumerate()
        .filter_map(|(index, e)| {
            check_event(e, limits, now_micros)
                .err()
                .map(|reason| BadEvent {
                    index,
                    id: Some(e.id.to_string()),
                    seq: Some(e.seq),
                    reason,
                })
        })
        .collect();
    if bad.is_empty() {
        Ok(envelope)
    } else {
        Err(Rejection::Events(bad))
    }
}

/// What the collector needs beyond [`SecurityEvent::check`].
fn check_event(e: &SecurityEvent, limits: &Limits, now_micros: i64) -> Result<(), String> {
    e.check().map_err(|err| err.to_string())?;
    if e.seq == 0 {
        return Err("field `seq`: 0 means the event was never queued; expected 1 or more".into());
    }
    if i64::try_from(e.seq).is_err() {
        return Err("field `seq`: larger than 2^63-1".into());
    }
    let ts = e.timestamp.as_micros();
    if ts > now_micros.saturating_add(limits.max_future_micros) {
        return Err(format!(
            "field `timestamp`: {} is more than {} s ahead of the collector's clock",
            e.timestamp,
            limits.max_future_micros / 1_000_000
        ));
    }
    if ts < now_micros.saturating_sub(limits.max_age_micros) {
        return Err(format!(
            "field `timestamp`: {} is older than the retention period ({} days)",
            e.timestamp,
            limits.max_age_micros / 86_400_000_000
        ));
    }
    let text_fields = [
        ("user_id", e.user_id.as_deref()),
        ("station_id", e.station_id.as_deref()),
    ];
    for (field, value) in text_fields {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(format!("field `{field}`: contains a NUL character"));
        }
    }
    for (field, map) in [("event_data", &e.event_data), ("context", &e.context)] {
        if map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(format!(
                "field `{field}`: contains a NUL character (\\u0000), which PostgreSQL cannot store"
            ));
        }
    }
    Ok(())
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The envelope did not parse as a whole: find out whether the envelope or which events are
/// at fault.
fn diagnose(bytes: &[u8], whole: &serde_json::Error) -> Rejection {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Loose {
        batch_version: u32,
        gateway_id: String,
        key_id: String,
        events: Vec<Value>,
        signature: String,
    }
    let loose: Loose = match serde_json::from_slice(bytes) {
        Ok(l) => l,
        Err(_) => return Rejection::Malformed(whole.to_string()),
    };
    if loose.batch_version != BATCH_VERSION {
        return Rejection::BatchVersion(loose.batch_version);
    }
    let bad: Vec<BadEvent> = loose
        .events
        .iter()
        .enumerate()
        .filter_map(|(index, v)| {
            SecurityEvent::deserialize(v).err().map(|e| BadEvent {
                index,
                id: v.get("id").and_then(Value::as_str).map(str::to_owned),
                seq: v.get("seq").and_then(Value::as_u64),
                reason: e.to_string(),
            })
        })
        .collect();
    if bad.is_empty() {
        Rejection::Malformed(whole.to_string())
    } else {
        Rejection::Events(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use linesentry_event::integrity::BatchSigner;
    use linesentry_event::{EventType, Timestamp};

    const NOW: i64 = 1_800_000_000_000_000;

    fn limits() -> Limits {
        Limits {
            max_bytes: 1 << 20,
            max_events: 100,
            max_future_micros: 86_400_000_000,
            max_age_micros: 400 * 86_400_000_000,
        }
    }

    fn event(seq: u64) -> SecurityEvent {
        let mut e =
            SecurityEvent::new("gw-1", EventType::SetpointChanged).at(Timestamp::from_micros(NOW));
        e.seq = seq;
        e
    }

    fn seal(events: &[SecurityEvent]) -> Vec<u8> {
        BatchSigner::new("gw-1", SigningKey::from_bytes(&[1; 32])).seal(events)
    }

    #[test]
    fn a_valid_batch_decodes_with_every_event() {
        let env = decode(&seal(&[event(1), event(2)]), &limits(), NOW).unwrap();
        assert_eq!(env.events.len(), 2);
    }

    #[test]
    fn each_invalid_event_is_named_by_index_id_and_seq() {
        let mut v: Value = serde_json::from_slice(&seal(&[event(1), event(2), event(3)])).unwrap();
        v["events"][1]["severity"] = "fatal".into();
        v["events"][2]["surprise"] = 1.into();
        let err = decode(&serde_json::to_vec(&v).unwrap(), &limits(), NOW).unwrap_err();
        let Rejection::Events(bad) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            bad.iter().map(|b| (b.index, b.seq)).collect::<Vec<_>>(),
            [(1, Some(2)), (2, Some(3))]
        );
        assert!(bad[0].id.is_some());
        assert_eq!(err.to_json()["events"][0]["index"], 1);
    }

    #[test]
    fn what_postgres_cannot_store_is_refused_before_it_reaches_postgres() {
        let nul = event(1).data("tag", "a\u{0}b");
        let err = decode(&seal(&[event(2), nul]), &limits(), NOW).unwrap_err();
        assert!(
            matches!(&err, Rejection::Events(b) if b[0].index == 1 && b[0].reason.contains("NUL")),
            "{err:?}"
        );
    }

    #[test]
    fn unqueued_far_future_and_too_old_events_are_refused() {
        let future = event(2).at(Timestamp::from_micros(NOW + 2 * 86_400_000_000));
        let old = event(3).at(Timestamp::from_micros(NOW - 401 * 86_400_000_000));
        let err = decode(&seal(&[event(0), future, old]), &limits(), NOW).unwrap_err();
        let Rejection::Events(bad) = err else {
            panic!()
        };
        assert_eq!(bad.len(), 3);
        assert!(bad[0].reason.contains("seq"));
        assert!(bad[1].reason.contains("ahead"));
        assert!(bad[2].reason.contains("older"));
    }

    #[test]
    fn envelope_level_faults_have_their_own_kinds() {
        assert_eq!(
            decode(b"{", &limits(), NOW).unwrap_err().kind(),
            "malformed"
        );
        let mut v: Value = serde_json::from_slice(&seal(&[event(1)])).unwrap();
        v["batch_version"] = 2.into();
        assert_eq!(
            decode(&serde_json::to_vec(&v).unwrap(), &limits(), NOW).unwrap_err(),
            Rejection::BatchVersion(2)
        );
        v["batch_version"] = 1.into();
        v["events"] = json!([]);
        assert_eq!(
            decode(&serde_json::to_vec(&v).unwrap(), &limits(), NOW).unwrap_err(),
            Rejection::Empty
        );
        let small = Limits {
            max_events: 1,
            ..limits()
        };
        assert!(matches!(
            decode(&seal(&[event(1), event(2)]), &small, NOW),
            Err(Rejection::TooManyEvents { count: 2, limit: 1 })
        ));
    }

    #[test]
    fn floats_cross_the_wire_exactly_so_signatures_and_chain_links_verify() {
        // Measurements are often f32 widened to f64: 17 significant digits that a
        // best-effort float parser may read back one ulp off, which changes the event's
        // hash (serde_json's float_roundtrip feature is what keeps them exact).
        let signer = BatchSigner::new("gw-1", SigningKey::from_bytes(&[1; 32]));
        let mut x = 0x1234_5678u32;
        let events: Vec<SecurityEvent> = (1..=2000)
            .map(|seq| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let v = f64::from(f32::from_bits(0x3f80_0000 | (x >> 9)) * 123.456);
                let mut e = event(seq).data("value", v).data("previous", -v / 3.0);
                e.seq = seq;
                e
            })
            .collect();
        let env = decode(&seal(&events), &limits_many(), NOW).unwrap();
        let changed = env
            .events
            .iter()
            .zip(&events)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 0, "events changed by the JSON round trip");
        env.verify(&signer.public_key()).unwrap();
    }

    fn limits_many() -> Limits {
        Limits {
            max_bytes: 16 << 20,
            max_events: 10_000,
            ..limits()
        }
    }

    #[test]
    fn gzip_is_bounded_after_decompression() {
        let body = vec![b' '; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let packed = gz.finish().unwrap();
        assert!(packed.len() < 1000);
        assert!(looks_gzipped(&packed));
        assert_eq!(decompress(&packed, true, 20_000).unwrap().len(), 10_000);
        assert_eq!(
            decompress(&packed, true, 5_000).unwrap_err(),
            Rejection::TooLarge { limit: 5_000 }
        );
        assert_eq!(
            decompress(b"not gzip", true, 100).unwrap_err().kind(),
            "encoding"
        );
    }
}
