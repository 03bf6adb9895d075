//! What every encoder shares: who exports ([`Exporter`]), what is known of an event's
//! integrity ([`Provenance`]), the errors, and the event with its dictionary row resolved.

use linesentry_event::SecurityEvent;

use crate::attack;
use crate::classes::{class_of, Family, Origin, UNKNOWN_CLASS_ID};

/// Vendor and product name in every format's header.
pub const VENDOR: &str = "linesentry";
pub const PRODUCT: &str = "linesentry";

/// Who exports: the same for every event of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporter {
    /// The linesentry version (CEF/LEEF header, OCSF `metadata.product.version`, ECS
    /// `observer.version`).
    pub product_version: String,
    /// Host name of the exporting agent or collector (ECS `observer.hostname`).
    pub host: String,
}

impl Exporter {
    /// This build's version, exporting from `host`.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            product_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: host.into(),
        }
    }
}

/// The collector's verdict on an event's place in its gateway's hash chain (the
/// collector's `chain::Verification`), or `Unchecked` where nobody verified it (the agent
/// exporting its own events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Chain {
    #[default]
    Unchecked,
    Verified,
    Pending,
    Broken,
    Gap,
    /// Made by the collector itself; not part of any chain.
    Local,
}

impl Chain {
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Unchecked => "unchecked",
            Chain::Verified => "verified",
            Chain::Pending => "pending",
            Chain::Broken => "broken",
            Chain::Gap => "gap",
            Chain::Local => "local",
        }
    }
}

/// The Ed25519 signature of the batch that carried an event (see
/// `linesentry_event::integrity`): it covers the event through its chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSignature {
    /// First 16 hex digits of SHA-256 over the gateway's public key.
    pub key_id: String,
    /// The signature as the envelope carries it (base64).
    pub signature: String,
}

/// What the exporter knows about an event's integrity beyond the event itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    pub chain: Chain,
    pub signature: Option<BatchSignature>,
}

/// Why an event or a setting could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("syslog {field}: {reason}")]
    SyslogSetting { field: &'static str, reason: String },
    #[error(
        "the syslog header and structured data alone take {needed} bytes, over the {limit}-byte message limit"
    )]
    HeaderOverLimit { needed: usize, limit: usize },
    #[error("a message for LF framing must not contain a line feed")]
    LineFeedInMessage,
}

/// An event with its dictionary row resolved, what every encoder starts from.
#[derive(Debug)]
pub(crate) struct Described<'a> {
    pub(crate) event: &'a SecurityEvent,
    pub(crate) class_id: u16,
    /// The dictionary title, or the raw type name for a type this build does not know.
    pub(crate) title: &'a str,
    pub(crate) family: Family,
    /// `None` for an unknown type.
    pub(crate) origin: Option<Origin>,
    /// ATT&CK for ICS technique ids: `event_data.attack` when the rule set it, else the
    /// catalogue's.
    pub(crate) attack: Vec<String>,
}

impl<'a> Described<'a> {
    pub(crate) fn new(event: &'a SecurityEvent) -> Self {
        let known = event.kind();
        let attack = attack::ids_of(event);
        match known {
            Some(t) => {
                let c = class_of(t);
                Self {
                    event,
                    class_id: c.id,
                    title: c.title,
                    family: c.family,
                    origin: Some(c.origin),
                    attack,
                }
            }
            None => Self {
                event,
                class_id: UNKNOWN_CLASS_ID,
                title: &event.event_type,
                family: Family::Detection,
                origin: None,
                attack,
            },
        }
    }

    /// Event time in milliseconds since the Unix epoch.
    pub(crate) fn time_ms(&self) -> i64 {
        self.event.timestamp.as_micros().div_euclid(1000)
    }

    /// Whether the event was made by the collector (its `gateway_id` is then the
    /// collector's id, not a gateway's).
    pub(crate) fn is_collectors(&self) -> bool {
        self.origin == Some(Origin::Collector)
    }
}

/// `text` with every control character except those `keep` accepts replaced by U+FFFD:
/// NUL, ESC and friends have no escape in CEF, LEEF or syslog headers, and a raw one can
/// end a record early in the receiver.
pub(crate) fn replace_controls(
    text: &str,
    keep: impl Fn(char) -> bool,
) -> std::borrow::Cow<'_, str> {
    if text.chars().all(|c| !c.is_control() || keep(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() && !keep(c) {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// `event_data` as compact JSON (control characters are `\uXXXX`-escaped by serde_json).
pub(crate) fn data_json(event: &SecurityEvent) -> String {
    serde_json::Value::Object(event.event_data.clone()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_replaced_and_kept_ones_stay() {
        assert_eq!(
            replace_controls("a\0b\x1bc", |_| false),
            "a\u{FFFD}b\u{FFFD}c"
        );
        assert_eq!(replace_controls("a\nb", |c| c == '\n'), "a\nb");
        assert!(matches!(
            replace_controls("plain ü", |_| false),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
