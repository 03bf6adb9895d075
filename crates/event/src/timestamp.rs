//! Event time: microseconds since the Unix epoch, RFC 3339 on the wire.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// UTC time with microsecond resolution (PostgreSQL `timestamptz` resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Self(micros)
    }

    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// A UUIDv7 whose time part is this timestamp, so ids sort by event time.
    pub fn uuid_v7(self) -> Uuid {
        let millis = u64::try_from(self.0.max(0) / 1000).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            ((millis % 1000) * 1_000_000) as u32,
        );
        Uuid::new_v7(ts)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            let parsed = DateTime::parse_from_rfc3339(&text).map_err(|e| {
                D::Error::custom(format!("timestamp `{text}` is not RFC 3339: {e}"))
            })?;
            Ok(Self(parsed.timestamp_micros()))
        } else {
            i64::deserialize(d).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_microseconds() {
        let t = Timestamp::from_micros(1_764_243_000_123_456);
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, "\"2025-11-27T11:30:00.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap(), t);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t: Timestamp = serde_json::from_str("\"2025-11-27T12:30:00.5+01:00\"").unwrap();
        assert_eq!(t.to_string(), "2025-11-27T11:30:00.500000Z");
    }

    #[test]
    fn uuid_v7_carries_the_millisecond() {
        let t = Timestamp::from_micros(1_764_243_000_123_456);
        let (secs, nanos) = t.uuid_v7().get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_764_243_000, 123));
    }
}
