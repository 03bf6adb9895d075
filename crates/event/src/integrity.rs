//! Tamper evidence: the per-gateway hash chain and the signed batch envelope.
//!
//! **Canonical JSON** of an event: its JSON wire form with every object's keys sorted by
//! their UTF-8 bytes, at every depth, and no whitespace; strings and numbers as serde_json
//! writes them (shortest round-trip floats, `\uXXXX` escapes for control characters).
//! Python's `json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! gives the same bytes for every event the agent produces.
//!
//! **Chain**: `hash(e) = SHA-256(canonical_json(e))`, over all fields including `seq` and
//! `prev_hash`. Each event's `prev_hash` is the hex hash of the gateway's event with the
//! previous `seq` (`null` for the first event of a store). The durable queue fills `seq` and
//! `prev_hash` in the transaction that stores the event, so the chain follows seq order
//! even when forwarding sends alerts ahead of older telemetry. A gap (evicted or
//! dead-lettered events) shows as a `prev_hash` that matches no received event; the buffer
//! reports evictions itself (`agent.buffer_dropped` with the seq range).
//!
//! Top-level keys sort as `context, correlation_id, event_data, event_type, gateway_id, id,
//! prev_hash, schema_version, seq, severity, ...`, so the canonical text is
//! `head + prev_hash + mid + seq + tail` where only `head` and `tail` depend on the event's
//! content: [`CanonicalParts`] is computed by whoever appends (in parallel), which also
//! hashes the head there, and the writer that numbers the events only hashes the link, the
//! seq and the tail.
//!
//! **Batch signature**: a batch (one MQTT message or one HTTPS request) is the envelope
//! `{"batch_version":1,"gateway_id":..,"key_id":..,"events":[..],"signature":..}`. The
//! signature is Ed25519 over [`signing_message`]: the ASCII text
//! `linesentry-batch-v1\n{gateway_id}\n{key_id}\n` followed by each event's hex hash and a
//! `\n`, in the order of `events`. It thus covers every byte of every event through the
//! chain hashes, and a verifier recomputes the hashes it needs anyway. `key_id` is the first
//! 16 hex digits of SHA-256 over the 32-byte public key.

use std::io::Write as _;
use std::ops::Range;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::SecurityEvent;

/// Version of the batch envelope.
pub const BATCH_VERSION: u32 = 1;

/// SHA-256 of an event's canonical JSON.
pub type EventHash = [u8; 32];

/// Canonical JSON of `event` (see the module doc). Written field by field in key order,
/// without an intermediate `serde_json::Value`: forwarding serialises every event this way.
pub fn canonical_json(e: &SecurityEvent) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(512);
    write_head(&mut out, e);
    write_opt(&mut out, e.prev_hash.as_deref());
    write_mid(&mut out, e.schema_version);
    let _ = write!(out, "{}", e.seq);
    write_tail(&mut out, e);
    // Only valid UTF-8 went in.
    String::from_utf8(out).unwrap_or_default()
}

/// The keys before `prev_hash`'s value, up to and including `"prev_hash":`. Returns where
/// the values of `context` and `event_data` are in `out`.
fn write_head(out: &mut Vec<u8>, e: &SecurityEvent) -> (Range<usize>, Range<usize>) {
    out.extend_from_slice(b"{\"context\":");
    let context_start = out.len();
    write_map(out, &e.context);
    let context = context_start..out.len();
    out.extend_from_slice(b",\"correlation_id\":");
    match e.correlation_id {
        Some(u) => write_uuid(out, &u),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"event_data\":");
    let data_start = out.len();
    write_map(out, &e.event_data);
    let event_data = data_start..out.len();
    out.extend_from_slice(b",\"event_type\":");
    write_str(out, &e.event_type);
    out.extend_from_slice(b",\"gateway_id\":");
    write_str(out, &e.gateway_id);
    out.extend_from_slice(b",\"id\":");
    write_uuid(out, &e.id);
    out.extend_from_slice(b",\"prev_hash\":");
    (context, event_data)
}

/// Between `prev_hash`'s value and `seq`'s: `,"schema_version":N,"seq":`.
fn write_mid(out: &mut Vec<u8>, schema_version: u32) {
    out.extend_from_slice(b",\"schema_version\":");
    let _ = write!(out, "{schema_version}");
    out.extend_from_slice(b",\"seq\":");
}

/// The keys after `seq`, from `,"severity":` to the closing brace.
fn write_tail(out: &mut Vec<u8>, e: &SecurityEvent) {
    out.extend_from_slice(b",\"severity\":");
    write_str(out, e.severity.as_str());
    out.extend_from_slice(b",\"source_ip\":");
    write_opt(out, e.source_ip.map(|ip| ip.to_string()).as_deref());
    out.extend_from_slice(b",\"station_id\":");
    write_opt(out, e.station_id.as_deref());
    out.extend_from_slice(b",\"timestamp\":");
    // RFC 3339 text: digits, `-`, `:`, `.`, `T`, `Z`; nothing to escape.
    out.push(b'"');
    e.timestamp.write_rfc3339(out);
    out.push(b'"');
    out.extend_from_slice(b",\"user_id\":");
    write_opt(out, e.user_id.as_deref());
    out.push(b'}');
}

fn write_uuid(out: &mut Vec<u8>, id: &uuid::Uuid) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_map(out: &mut Vec<u8>, map: &serde_json::Map<String, Value>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, &map[key]);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_map(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// SHA-256 of [`canonical_json`].
pub fn event_hash(event: &SecurityEvent) -> EventHash {
    Sha256::digest(canonical_json(event).as_bytes()).into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex of `bytes` to `out` (forwarding writes thousands of these a
/// second; `format!` per byte showed up in profiles).
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)]);
        out.push(HEX_DIGITS[usize::from(b & 0x0f)]);
    }
}

/// Lower-case hex of a hash.
pub fn hex(hash: &[u8]) -> String {
    let mut out = Vec::with_capacity(hash.len() * 2);
    push_hex(&mut out, hash);
    // Only ASCII hex digits went in.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses 64 hex digits (either case).
pub fn parse_hash(text: &str) -> Option<EventHash> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// The content-dependent pieces of an event's canonical JSON; see the module doc.
///
/// The head (everything before `prev_hash`'s value, most of the bytes) is hashed when the
/// parts are made, by whoever appends, in parallel; the parts keep SHA-256's state after it,
/// so [`CanonicalParts::hash`] (run by the one writer that numbers and links events) only
/// hashes the link, `seq` and the tail.
#[derive(Clone)]
pub struct CanonicalParts {
    /// SHA-256 after the head, up to and including `"prev_hash":`.
    head: Sha256,
    /// The mid, `,"schema_version":N,"seq":`, then the tail, from `,"severity":` to the
    /// closing brace.
    rest: Box<str>,
    /// Where the mid ends in `rest`.
    mid_end: usize,
}

impl std::fmt::Debug for CanonicalParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalParts")
            .field("rest", &self.rest)
            .finish_non_exhaustive()
    }
}

impl CanonicalParts {
    /// Written piece by piece from the event (no copy of it, no search in the text).
    pub fn new(event: &SecurityEvent) -> Self {
        Self::with_members(event, |_, _| ()).0
    }

    /// [`CanonicalParts::new`], handing `members` the canonical JSON of `event_data` and of
    /// `context` on the way, so a caller that stores that text too (the durable queue) does
    /// not write the maps a second time.
    pub fn with_members<R>(
        event: &SecurityEvent,
        members: impl FnOnce(&str, &str) -> R,
    ) -> (Self, R) {
        let mut out = Vec::with_capacity(512);
        let (context, event_data) = write_head(&mut out, event);
        // Only valid UTF-8 went in; both ranges are whole JSON values.
        let text = |r: Range<usize>| std::str::from_utf8(&out[r]).unwrap_or_default();
        let answer = members(text(event_data), text(context));
        let mut head = Sha256::new();
        head.update(&out);
        out.clear();
        write_mid(&mut out, event.schema_version);
        let mid_end = out.len();
        write_tail(&mut out, event);
        let rest = String::from_utf8(out).unwrap_or_default().into_boxed_str();
        (
            Self {
                head,
                rest,
                mid_end,
            },
            answer,
        )
    }

    /// The hash the event has once numbered `seq` and linked to `prev`.
    pub fn hash(&self, seq: u64, prev: Option<&EventHash>) -> EventHash {
        let bytes = self.rest.as_bytes();
        let mut h = self.head.clone();
        match prev {
            Some(p) => {
                let mut quoted = [b'"'; 66];
                for (pair, b) in quoted[1..65].chunks_exact_mut(2).zip(p) {
                    pair[0] = HEX_DIGITS[usize::from(b >> 4)];
                    pair[1] = HEX_DIGITS[usize::from(b & 0x0f)];
                }
                h.update(quoted);
            }
            None => h.update(b"null"),
        }
        h.update(&bytes[..self.mid_end]);
        let mut digits = [0u8; 20];
        h.update(decimal(seq, &mut digits));
        h.update(&bytes[self.mid_end..]);
        h.finalize().into()
    }

    /// Bytes of text held (the mid and the tail), for memory accounting.
    pub fn len(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `key_id` of a public key: first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// The bytes a batch signature covers.
pub fn signing_message(gateway_id: &str, key_id: &str, hashes: &[EventHash]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(40 + gateway_id.len() + hashes.len() * 65);
    msg.extend_from_slice(b"linesentry-batch-v1\n");
    msg.extend_from_slice(gateway_id.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(key_id.as_bytes());
    msg.push(b'\n');
    for h in hashes {
        push_hex(&mut msg, h);
        msg.push(b'\n');
    }
    msg
}

/// Signs batches for one gateway.
#[derive(Clone)]
pub struct BatchSigner {
    gateway_id: String,
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for BatchSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSigner")
            .field("gateway_id", &self.gateway_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl BatchSigner {
    pub fn new(gateway_id: impl Into<String>, key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        Self {
            gateway_id: gateway_id.into(),
            key,
            key_id,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The JSON envelope of `events`, signed.
    pub fn seal<'a>(&self, events: impl IntoIterator<Item = &'a SecurityEvent>) -> Vec<u8> {
        let events: Vec<&SecurityEvent> = events.into_iter().collect();
        let hashes: Vec<EventHash> = events.iter().map(|e| event_hash(e)).collect();
        let signature = self
            .key
            .sign(&signing_message(&self.gateway_id, &self.key_id, &hashes));
        let envelope = EnvelopeRef {
            batch_version: BATCH_VERSION,
            gateway_id: &self.gateway_id,
            key_id: &self.key_id,
            events: &events,
            signature: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                signature.to_bytes(),
            ),
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Like [`BatchSigner::seal`], from events already in canonical JSON with their hashes
    /// (a sink that sized its messages by the canonical text serialises each event once).
    /// The events go on the wire in their canonical form.
    pub fn seal_canonical(&self, events: &[(&str, EventHash)]) -> Vec<u8> {
        let hashes: Vec<EventHash> = events.iter().map(|(_, h)| *h).collect();
        let signature = self
            .key
            .sign(&signing_message(&self.gateway_id, &self.key_id, &hashes));
        let body: usize = events.iter().map(|(j, _)| j.len() + 1).sum();
        let mut out = Vec::with_capacity(self.overhead() + body);
        out.extend_from_slice(b"{\"batch_version\":");
        out.extend_from_slice(BATCH_VERSION.to_string().as_bytes());
        out.extend_from_slice(b",\"gateway_id\":");
        out.extend_from_slice(
            serde_json::to_string(&self.gateway_id)
                .unwrap_or_default()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"key_id\":\"");
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(b"\",\"events\":[");
        for (i, (json, _)) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json.as_bytes());
        }
        out.extend_from_slice(b"],\"signature\":\"");
        out.extend_from_slice(
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                signature.to_bytes(),
            )
            .as_bytes(),
        );
        out.extend_from_slice(b"\"}");
        out
    }

    /// Bytes the envelope around `events` adds beyond the events' own JSON (and commas).
    pub fn overhead(&self) -> usize {
        // {"batch_version":1,"gateway_id":"..","key_id":"..","events":[],"signature":".."}
        80 + self.gateway_id.len() + self.key_id.len() + 88
    }
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    batch_version: u32,
    gateway_id: &'a str,
    key_id: &'a str,
    events: &'a [&'a SecurityEvent],
    signature: String,
}

/// A received batch envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub batch_version: u32,
    pub gateway_id: String,
    pub key_id: String,
    pub events: Vec<SecurityEvent>,
    pub signature: String,
}

/// Why a batch did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    #[error("unsupported batch_version {0}; this build reads version {BATCH_VERSION}")]
    Version(u32),
    #[error("event {index} belongs to gateway `{found}`, the batch to `{expected}`")]
    ForeignEvent {
        index: usize,
        found: String,
        expected: String,
    },
    #[error("key_id `{found}` is not the registered key `{expected}`")]
    UnknownKey { found: String, expected: String },
    #[error("signature is not base64 of 64 bytes")]
    SignatureFormat,
    #[error("signature does not verify with the registered key")]
    BadSignature,
}

impl Envelope {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Checks version, gateway of every event, key id and signature. Returns the events'
    /// hashes (in batch order) for the chain check.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<EventHash>, IntegrityError> {
        if self.batch_version != BATCH_VERSION {
            return Err(IntegrityError::Version(self.batch_version));
        }
        for (index, e) in self.events.iter().enumerate() {
            if e.gateway_id != self.gateway_id {
                return Err(IntegrityError::ForeignEvent {
                    index,
                    found: e.gateway_id.clone(),
                    expected: self.gateway_id.clone(),
                });
            }
        }
        let expected = key_id(key);
        if self.key_id != expected {
            return Err(IntegrityError::UnknownKey {
                found: self.key_id.clone(),
                expected,
            });
        }
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &self.signature)
                .map_err(|_| IntegrityError::SignatureFormat)?;
        let bytes: [u8; 64] = raw
            .try_into()
            .map_err(|_| IntegrityError::SignatureFormat)?;
        let signature = Signature::from_bytes(&bytes);
        let hashes: Vec<EventHash> = self.events.iter().map(event_hash).collect();
        key.verify(
            &signing_message(&self.gateway_id, &self.key_id, &hashes),
            &signature,
        )
        .map_err(|_| IntegrityError::BadSignature)?;
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventType, Severity};

    /// The definition, literally: the serde JSON form, keys sorted at every depth.
    fn canonical_by_definition(event: &SecurityEvent) -> String {
        fn sorted(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    let mut out = serde_json::Map::new();
                    for k in keys {
                        out.insert(k.clone(), sorted(&m[k]));
                    }
                    Value::Object(out)
                }
                Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
                other => other.clone(),
            }
        }
        serde_json::to_string(&sorted(&serde_json::to_value(event).unwrap())).unwrap()
    }

    #[test]
    fn the_direct_writer_matches_the_definition_for_every_field_kind() {
        let mut full = sample()
            .correlation(uuid::Uuid::now_v7())
            .data("f", 0.1)
            .data("big", 1e300)
            .data("neg", -42)
            .data("unicode", "Grüße \u{2603} \"q\" \\ \n\t")
            .data(
                "arr",
                serde_json::json!([1.5, "x", null, true, {"b": 1, "a": 2}]),
            );
        full.user_id = Some("operator".into());
        full.source_ip = Some("fe80::1".parse().unwrap());
        full.prev_hash = Some(hex(&[9u8; 32]));
        full.seq = 123_456;
        let mut minimal = SecurityEvent::new("gw", EventType::AgentStarted);
        minimal.event_type = "a.b".into();
        for e in [sample(), minimal, full] {
            assert_eq!(canonical_json(&e), canonical_by_definition(&e));
        }
    }

    fn sample() -> SecurityEvent {
        SecurityEvent::new("gw-1", EventType::SetpointChanged)
            .station("press-1")
            .severity(Severity::Warn)
            .data("tag", "die_temp_sp")
            .data("value", 251.5)
            .data(
                "nested",
                serde_json::json!({"z": 1, "a": [1, {"y": "\u{1}", "b": null}]}),
            )
            .context("source", "modbus")
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let text = canonical_json(&sample());
        assert!(text.starts_with("{\"context\":{\"source\":\"modbus\"},\"correlation_id\":null,\"event_data\":{\"nested\":{\"a\":[1,{\"b\":null,\"y\":\"\\u0001\"}],\"z\":1}"), "{text}");
        assert!(!text.contains(' '));
    }

    #[test]
    fn parts_hash_equals_the_hash_of_the_numbered_and_linked_event() {
        let base = sample();
        let parts = CanonicalParts::new(&base);
        let prev = [7u8; 32];
        for (seq, prev) in [(1, None), (42, Some(prev)), (u64::MAX, Some(prev))] {
            let mut e = base.clone();
            e.seq = seq;
            e.prev_hash = prev.map(|p| hex(&p));
            assert_eq!(parts.hash(seq, prev.as_ref()), event_hash(&e), "seq {seq}");
        }
    }

    #[test]
    fn parts_are_exact_even_when_event_data_mimics_the_top_level_keys() {
        let tricky = sample().data(
            "x",
            serde_json::json!({"a": 1, "prev_hash": null, "schema_version": 1, "seq": 0, "severity": "info"}),
        );
        let parts = CanonicalParts::new(&tricky);
        let mut e = tricky.clone();
        e.seq = 9;
        e.prev_hash = Some(hex(&[1u8; 32]));
        assert_eq!(parts.hash(9, Some(&[1u8; 32])), event_hash(&e));
    }

    #[test]
    fn hashes_differ_when_any_field_changes() {
        let event = sample();
        let base = event_hash(&event);
        assert_eq!(base, event_hash(&event.clone()));
        assert_ne!(base, event_hash(&event.clone().data("value", 251.6)));
        assert_ne!(base, event_hash(&event.clone().severity(Severity::Error)));
        let mut e = event.clone();
        e.seq = 1;
        assert_ne!(base, event_hash(&e));
    }

    #[test]
    fn a_sealed_batch_verifies_and_any_tampering_is_caught() {
        let signer = BatchSigner::new("gw-1", SigningKey::from_bytes(&[3u8; 32]));
        let first = sample();
        let events = [first.clone(), first.data("value", 1)];
        let bytes = signer.seal(&events);
        let env = Envelope::parse(&bytes).unwrap();
        assert_eq!(env.events, events);
        env.verify(&signer.public_key()).unwrap();

        let mut tampered = env.clone();
        tampered.events[1]
            .event_data
            .insert("value".into(), 2.into());
        assert_eq!(
            tampered.verify(&signer.public_key()),
            Err(IntegrityError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[4u8; 32]).verifying_key();
        assert!(matches!(
            env.verify(&other),
            Err(IntegrityError::UnknownKey { .. })
        ));
        let mut foreign = env.clone();
        foreign.events[0].gateway_id = "gw-2".into();
        assert!(matches!(
            foreign.verify(&signer.public_key()),
            Err(IntegrityError::ForeignEvent { index: 0, .. })
        ));
    }

    #[test]
    fn a_batch_sealed_from_canonical_text_verifies_like_one_sealed_from_events() {
        let signer = BatchSigner::new("gw-1", SigningKey::from_bytes(&[5u8; 32]));
        let first = sample();
        let events = [first.clone(), first.data("value", 2)];
        let texts: Vec<String> = events.iter().map(canonical_json).collect();
        let pieces: Vec<(&str, EventHash)> = texts
            .iter()
            .map(|t| (t.as_str(), Sha256::digest(t.as_bytes()).into()))
            .collect();
        let env = Envelope::parse(&signer.seal_canonical(&pieces)).unwrap();
        assert_eq!(env.events, events);
        env.verify(&signer.public_key()).unwrap();
    }

    #[test]
    fn hex_round_trips() {
        let h = event_hash(&sample());
        assert_eq!(hex(&h).len(), 64);
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
    }
}
