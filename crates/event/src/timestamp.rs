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

impl Timestamp {
    /// Appends the RFC 3339 text of [`Display`](fmt::Display) (`2025-11-27T11:30:00.123456Z`)
    /// to `out`. Years 0 to 9999 are written digit by digit (every event's canonical JSON
    /// carries one; chrono's formatter was a tenth of encoding an event), others by chrono.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        if !(0..=9999).contains(&year) {
            out.extend_from_slice(self.chrono_text().as_bytes());
            return;
        }
        let second_of_day = secs.rem_euclid(86_400);
        let mut push = |n: i64, width: u32, sep: u8| {
            for p in (0..width).rev() {
                out.push(b'0' + (n / 10_i64.pow(p) % 10) as u8);
            }
            out.push(sep);
        };
        push(year, 4, b'-');
        push(month, 2, b'-');
        push(day, 2, b'T');
        push(second_of_day / 3600, 2, b':');
        push(second_of_day / 60 % 60, 2, b':');
        push(second_of_day % 60, 2, b'.');
        push(micros, 6, b'Z');
    }

    fn chrono_text(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(27);
        self.write_rfc3339(&mut text);
        // Only ASCII went in.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
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
    fn the_text_is_chrono_s_rfc3339_with_microseconds_at_every_edge() {
        let day = 86_400_000_000_i64;
        let edges = [
            0,
            -1,
            1,
            day - 1,
            -day,
            951_782_400_000_000,     // 2000-02-29
            4_107_542_399_999_999,   // 2100-02-28T23:59:59.999999
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001, // the microsecond before: year -1, chrono's text
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01: chrono's text
            i64::MIN,
            i64::MAX,
        ];
        for micros in edges {
            let t = Timestamp::from_micros(micros);
            assert_eq!(t.to_string(), t.chrono_text(), "{micros}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it(micros in -70_000_000_000_000_000_i64..300_000_000_000_000_000) {
            let t = Timestamp::from_micros(micros);
            proptest::prop_assert_eq!(t.to_string(), t.chrono_text());
        }
    }

    #[test]
    fn uuid_v7_carries_the_millisecond() {
        let t = Timestamp::from_micros(1_764_243_000_123_456);
        let (secs, nanos) = t.uuid_v7().get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_764_243_000, 123));
    }
}
