//! What a station looked like when it was last known good: the values of watched tags, the
//! device's identity, its server's start time, session count and security policy. Learned
//! on first contact, updated after each reported change, and stored by the buffer in the
//! same transaction as the events, so a restart of the agent neither forgets nor re-alarms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reading::{DeviceIdentity, Value};

/// Format version of the stored form; a different one is discarded (re-learned).
const VERSION: u32 = 1;

/// A value as stored: explicitly tagged, so `5u64` does not come back as `5i64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl From<&Value> for Stored {
    fn from(v: &Value) -> Self {
        match v {
            Value::Bool(b) => Stored::Bool(*b),
            Value::Int(i) => Stored::Int(*i),
            Value::UInt(u) => Stored::UInt(*u),
            Value::Float(f) => Stored::Float(*f),
            Value::Text(t) => Stored::Text(t.clone()),
        }
    }
}

impl From<&Stored> for Value {
    fn from(s: &Stored) -> Self {
        match s {
            Stored::Bool(b) => Value::Bool(*b),
            Stored::Int(i) => Value::Int(*i),
            Stored::UInt(u) => Value::UInt(*u),
            Stored::Float(f) => Value::Float(*f),
            Stored::Text(t) => Value::Text(t.clone()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    version: u32,
    /// Watched tags (setpoints, limits, modes, programs, firmware, counters) by name.
    pub values: BTreeMap<String, Stored>,
    pub identity: Option<DeviceIdentity>,
    pub server_start: Option<String>,
    pub sessions: Option<u64>,
    pub best_policy: Option<String>,
    pub offers_none: Option<bool>,
    /// Last seen rejected-session counters, by reserved tag name.
    pub rejected: BTreeMap<String, u64>,
}

impl Baseline {
    pub fn new() -> Self {
        Self {
            version: VERSION,
            ..Self::default()
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The stored baseline, or why it cannot be used (then it is learned afresh).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let b: Baseline = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if b.version == VERSION {
            Ok(b)
        } else {
            Err(format!(
                "baseline format {} (expected {VERSION})",
                b.version
            ))
        }
    }

    pub fn value(&self, tag: &str) -> Option<Value> {
        self.values.get(tag).map(Value::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_keep_their_kind_through_storage() {
        let mut b = Baseline::new();
        b.values.insert("a".into(), Stored::from(&Value::UInt(5)));
        b.values.insert("b".into(), Stored::from(&Value::Int(5)));
        let back = Baseline::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back.value("a"), Some(Value::UInt(5)));
        assert_eq!(back.value("b"), Some(Value::Int(5)));
        assert_eq!(back, b);
    }

    #[test]
    fn an_unreadable_or_old_baseline_is_refused() {
        assert!(Baseline::from_bytes(b"nope").is_err());
        assert!(Baseline::from_bytes(br#"{"version":0,"values":{},"identity":null,"server_start":null,"sessions":null,"best_policy":null,"offers_none":null,"rejected":{}}"#).is_err());
    }
}
